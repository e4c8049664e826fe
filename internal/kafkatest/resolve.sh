#!/usr/bin/env bash
# Resolves the Apache Kafka broker and MirrorMaker 2 jars that internal/kafkatest
# runs (see pom.xml beside this script) into a cache outside the repository:
#
#   ${MERIDIAN_KAFKA_CACHE:-$HOME/.cache/meridian/kafka-<version>}/
#     lib/*.jar     every runtime jar
#     classpath     the same jars, one absolute classpath line
#     .resolved     stamp: version and pom hash; present means done
#
# Idempotent: when the stamp matches it prints the cache path and exits at
# once. MERIDIAN_KAFKA_VERSION overrides the version in pom.xml (keep it equal
# to kafkatest.Version, or set the same variable for the tests). Prints the
# cache directory on stdout; everything else goes to stderr.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
pom="$here/pom.xml"
version="${MERIDIAN_KAFKA_VERSION:-$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$pom")}"
[ -n "$version" ] || { echo "resolve: no kafka.version in $pom" >&2; exit 1; }
cache="${MERIDIAN_KAFKA_CACHE:-${HOME:?HOME is not set}/.cache/meridian/kafka-$version}"
stamp="version=$version pom=$(sha256sum "$pom" | cut -d' ' -f1)"

done_already() { [ -f "$cache/.resolved" ] && [ "$(cat "$cache/.resolved")" = "$stamp" ] && [ -s "$cache/classpath" ]; }

if done_already; then
  echo "$cache"
  exit 0
fi

command -v mvn >/dev/null 2>&1 || { echo "resolve: mvn not found (Debian: apt-get install -y maven)" >&2; exit 1; }

mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9 # another resolve may be running: wait for it, then look again
if done_already; then
  echo "$cache"
  exit 0
fi

echo "resolve: Apache Kafka $version into $cache" >&2
tmp="$cache/lib.tmp"
rm -rf "$tmp" "$cache/.resolved"
mvn -B -q -Dstyle.color=never -f "$pom" -Dkafka.version="$version" \
  dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp" >&2

# Java's classpath cannot take a directory wildcard portably with our own
# main classes and tools, so spell out every jar.
rm -rf "$cache/lib"
mv "$tmp" "$cache/lib"
n=$(find "$cache/lib" -maxdepth 1 -name '*.jar' | wc -l)
[ "$n" -gt 0 ] || { echo "resolve: no jars resolved" >&2; exit 1; }
find "$cache/lib" -maxdepth 1 -name '*.jar' | LC_ALL=C sort | paste -sd: > "$cache/classpath.tmp"
mv "$cache/classpath.tmp" "$cache/classpath"
printf '%s' "$stamp" > "$cache/.resolved"
echo "resolve: $n jars" >&2
echo "$cache"
