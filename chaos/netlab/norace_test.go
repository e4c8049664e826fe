//go:build !race

package netlab_test

const raceEnabled = false
