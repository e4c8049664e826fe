// Package netlabtest has test helpers for code that runs on the packet-level
// network lab (package chaos/netlab). It is kept apart from netlab so that
// the testing package never ends up in the meridian binary, which imports
// netlab for `meridian chaos lab`.
//
// Like netlab it builds on Linux only.
package netlabtest
