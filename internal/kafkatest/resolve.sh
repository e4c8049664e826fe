#!/usr/bin/env bash
# Resolves the Apache Kafka broker and MirrorMaker 2 jars that internal/kafkatest
# runs (see pom.xml beside this script) into a cache outside the repository:
#
#   ${MERIDIAN_KAFKA_CACHE:-$HOME/.cache/meridian/kafka-<version>}/
#     lib/*.jar     every runtime jar
#     classpath     the same jars, one absolute classpath line
#     broker.jsa    a class-data-sharing archive of a broker's start-up
#                   (best effort: it cuts a broker's start-up CPU by about
#                   40%; the harness runs without it when it is missing)
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
# Maven 3.8 prints colour codes even in batch mode: strip them.
mvn -B -q -f "$pom" -Dkafka.version="$version" \
  dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp" 2>&1 | sed 's/\x1b\[[0-9;]*m//g' >&2

# Java's classpath cannot take a directory wildcard portably with our own
# main classes and tools, so spell out every jar.
rm -rf "$cache/lib"
mv "$tmp" "$cache/lib"
n=$(find "$cache/lib" -maxdepth 1 -name '*.jar' | wc -l)
[ "$n" -gt 0 ] || { echo "resolve: no jars resolved" >&2; exit 1; }
find "$cache/lib" -maxdepth 1 -name '*.jar' | LC_ALL=C sort | paste -sd: > "$cache/classpath.tmp"
mv "$cache/classpath.tmp" "$cache/classpath"
echo "resolve: $n jars" >&2

# Class-data sharing: start one broker on loopback with
# -XX:ArchiveClassesAtExit and stop it cleanly, so that later JVMs map the
# classes it loaded instead of parsing and verifying them again. The JVM
# ignores an archive that no longer matches (another JDK, another classpath).
free_port() { # a loopback port nobody listens on (best effort)
  local p
  for _ in $(seq 1 50); do
    p=$((20000 + RANDOM % 20000))
    grep -qi ":$(printf '%04X' "$p") " /proc/net/tcp /proc/net/tcp6 2>/dev/null || { echo "$p"; return; }
  done
  return 1
}
train() {
  local t pid port cport cp
  t="$(mktemp -d)"
  cp="$(cat "$cache/classpath")"
  port=$(free_port) && cport=$(free_port) && [ "$port" != "$cport" ] || return 1
  cat > "$t/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
log.dirs=$t/data
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
PROPS
  cat > "$t/log4j2.properties" <<PROPS
appender.file.type = File
appender.file.name = file
appender.file.fileName = $t/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
PROPS
  local jvm=(-Xms32m -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.net.preferIPv4Stack=true
    "-Dlog4j2.configurationFile=$t/log4j2.properties" -cp "$cp")
  java "${jvm[@]}" kafka.tools.StorageTool format --cluster-id MkU3OEVBNTcwNTJENDM2Qk \
    --config "$t/server.properties" >"$t/format.log" 2>&1 || { cat "$t/format.log" >&2; rm -rf "$t"; return 1; }
  java "${jvm[@]}" "-XX:ArchiveClassesAtExit=$cache/broker.jsa.tmp" kafka.Kafka "$t/server.properties" >"$t/stdout.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 1200); do # up to 2 minutes
    grep -q 'Kafka Server started' "$t/server.log" 2>/dev/null && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  local ok=0
  grep -q 'Kafka Server started' "$t/server.log" 2>/dev/null && ok=1
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  [ "$ok" = 1 ] || { tail -20 "$t/server.log" "$t/stdout.log" >&2 2>/dev/null; rm -rf "$t"; return 1; }
  rm -rf "$t"
  [ -s "$cache/broker.jsa.tmp" ] && mv "$cache/broker.jsa.tmp" "$cache/broker.jsa"
}
rm -f "$cache/broker.jsa" "$cache/broker.jsa.tmp"
if command -v java >/dev/null 2>&1; then
  echo "resolve: training a class-data-sharing archive (one broker start on 127.0.0.1)" >&2
  train || { rm -f "$cache/broker.jsa.tmp"; echo "resolve: no class-data-sharing archive (brokers start without it)" >&2; }
fi

printf '%s' "$stamp" > "$cache/.resolved"
echo "$cache"
