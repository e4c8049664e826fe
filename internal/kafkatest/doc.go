// Package kafkatest runs real Apache Kafka for tests and benchmarks: N
// single-node KRaft clusters (one JVM each, combined broker and controller)
// on 127.0.0.1, started from jars that Maven resolves into a cache outside
// the repository.
//
// kfake is fast and speaks the protocol, but it is a fake; where it and
// Kafka differ, Kafka is right. The guarantees Meridian sells (exactly-once
// writes through transactions, offset maps, fencing, recovery after a
// broker crash) are checked against the real broker through this package.
// It is a test helper: only tests and benchmarks may import it (deptest
// keeps it out of the production path).
//
// # Use
//
//	cs := kafkatest.Start(t, 2, kafkatest.Options{})
//	cl := cs[0].Client(t)          // a kgo.Client seeded with cs[0]
//	_ = cs[1].Bootstrap()          // []string{"127.0.0.1:port"}
//	cs[0].Kill()                   // SIGKILL, as a crash
//	cs[0].Restart()                // same data dir, same ports
//
// Start returns once every broker serves metadata; t.Cleanup kills each JVM
// it started, by PID, and the kernel kills them too if the test binary dies
// first (Pdeathsig). Options.Config overrides server.properties entries
// ("log.cleaner.*" for compaction tests; values may use ${PORT} and
// ${CONTROLLER_PORT} to redefine the listeners).
//
// # Authentication and ACLs
//
// Options.Users turns the client listener into SASL_PLAINTEXT with PLAIN
// and those users, plus AdminUser (random password), which Client and the
// readiness check use; ClientAs logs in as another user, SASL and Password
// give the credentials to clients built elsewhere (a gateway's topology).
// The broker talks to itself over a second, PLAINTEXT listener as
// ANONYMOUS. Options.Authorizer turns on the StandardAuthorizer with
// AdminUser and ANONYMOUS as super users and no access for anyone else
// until ACLs (kadm CreateACLs, as the admin) grant it; ACLs take effect
// within a second or so, through the metadata log.
//
//	cs := kafkatest.Start(t, 1, kafkatest.Options{Users: map[string]string{"alice": "pw"}, Authorizer: true})
//	alice := cs[0].ClientAs(t, "alice")
//
// # MirrorMaker 2
//
// StartMM2 runs Apache MirrorMaker 2 in dedicated mode (main class
// org.apache.kafka.connect.mirror.MirrorMaker, an mm2.properties written to
// its own directory, log in mm2.log there, stopped by PID) from the same
// jars, as the benchmark peer of `meridian bench mm2`. One flow, source
// alias a to target b, runs with --clusters b; MM2Config shows every
// setting (intervals of 1 s, replication factors of 1). In dedicated mode
// worker settings take the target's prefix: b.offset.flush.interval.ms,
// without which offset syncs, and so synced group offsets, lag by up to
// the default 60 s. TestMM2 (1,000 records and one group, two fresh
// brokers) took 10.6 s in all at load 5: the records at the target 5.5 s
// after MirrorMaker's start, the group's offsets 7.7 s after it.
//
// Launch is Start without a testing.TB, for the CLI's benchmarks.
//
// Without java 17+ or the jars, Start skips the test with the reason; under
// CI=true it fails it. Get the jars with:
//
//	internal/kafkatest/resolve.sh     (or: make kafka-jars)
//
// which reads pom.xml (Apache Kafka, MirrorMaker 2, log4j2) and writes
// ${MERIDIAN_KAFKA_CACHE:-$HOME/.cache/meridian/kafka-VERSION}/{lib,classpath}
// plus broker.jsa, a class-data-sharing archive trained by one broker start.
// A second run finds its stamp and returns at once. MERIDIAN_KAFKA_VERSION
// selects another version for both the script and the tests.
//
// # Version
//
// Apache Kafka 4.3.1 (see Version): Maven offers the broker up to 4.4.0 but
// connect-mirror only up to 4.3.1, and the broker and MirrorMaker 2 should
// be the same release. Its classes are Java 17 bytecode and it runs on the
// machine's Java 17. 4.x enables the KIP-890 transaction protocol
// (transaction.version=2), which franz-go uses.
//
// # Footprint and speed
//
// Measured on the 2-core build machine, shared with other work (load
// average 5 to 16 while measuring, so read these as upper bounds):
//
//   - resolve.sh cold, empty Maven repository: 46 s to resolve the 93 jars
//     (54 MB) at load 5, plus about 15 s to train the archive; 2 min 7 s
//     (32 s CPU) at load 16. Measured with
//     time MAVEN_OPTS=-Dmaven.repo.local=/tmp/m2cold MERIDIAN_KAFKA_CACHE=/tmp/kcold internal/kafkatest/resolve.sh
//   - resolve.sh warm: 0.02 s (time internal/kafkatest/resolve.sh).
//   - broker start to first metadata (java launched until kcat -L answers,
//     CPU from /proc/PID/stat): 7.1-7.8 s wall and 5.2-5.6 s CPU without the
//     archive, 4.4 s wall and 3.2-3.3 s CPU with it. The harness logs each
//     start ("ready in"): 3.7-5.6 s. Formatting the storage beforehand
//     takes 1-2 s more (1.1 s CPU with the archive, 1.6-1.9 s without).
//   - a restart after SIGKILL: 5.5-7.3 s, of which up to 3 s is the
//     controller waiting for the dead broker's session to expire
//     (broker.session.timeout.ms, 9 s by default, set to 3 s here).
//   - RSS of one broker (VmRSS in /proc/PID/status): 280-290 MB right after
//     start and 177 MB after TestSmoke's workload (TestSmoke logs it), with
//     -Xmx512m (DefaultHeap), serial GC, C1 only. Three brokers fit in 1 GB.
//   - go test -race ./internal/kafkatest/: 32 s at load 6, 49 s at load 16.
//
// The JVM runs with -XX:+UseSerialGC and -XX:TieredStopAtLevel=1 (fewer
// threads, faster start, less CPU); benchmarks that want peak broker
// throughput pass Options.JVMArgs such as "-XX:TieredStopAtLevel=4" and
// "-XX:+UseG1GC". Internal topics have one replica and 4 partitions (50 by
// default), the broker has 2 network and 2 I/O threads.
//
// # kfake and real Kafka: differences met
//
//   - Topic auto-creation: Kafka's brokers allow it by default
//     (auto.create.topics.enable=true), kfake only with
//     kfake.AllowAutoTopicCreation(); with either, franz-go asks for it only
//     with kgo.AllowAutoTopicCreation().
//   - Internal topics: Kafka creates __consumer_offsets and
//     __transaction_state on first use with the configured replication
//     factor; with the default of 3 a single broker cannot create them and
//     groups and transactions stall on COORDINATOR_NOT_AVAILABLE (Kafka's
//     known behaviour, not re-run here), hence the 1s in the config. kfake
//     has no such topics.
//   - Crashes: a real broker restarted after SIGKILL recovers its logs and
//     re-registers only when its old session expires; until then clients
//     get connection refused, then retriable errors. kfake has no crash to
//     recover from.
//   - Authentication: a wrong SASL/PLAIN password gets an error from
//     Kafka (SaslAuthenticate, "Invalid username or password"); kfake
//     closes the connection. A request before the handshake on a SASL
//     listener closes it too.
//   - Transaction markers after a crash: a coordinator that restarts with
//     a commit prepared in its log re-sends the markers, and skips every
//     partition that has no leader at that moment ("likely deleted"),
//     which a single-replica partition of a just-restarted broker briefly
//     has; it then records the transaction complete. Those records hang
//     (read_committed stops before them) until the producer ID's next
//     marker there commits them with its own transaction. Seen once in 15
//     runs of the passthrough broker-kill test, as 2,048 duplicates; sinks
//     now commit such transactions before loading their progress
//     (kraw.CommitHanging). kfake has no crash, so no hanging transaction.
//   - A transactional batch written to a partition the transaction never
//     added is added by Kafka 4.3 (KIP-890 verification; setting
//     transaction.partition.verification.enable=false does not change it)
//     and by kfake alike: no client request can make a hanging
//     transaction on purpose.
//   - Transaction markers are written after EndTransaction returns: the
//     coordinator answers once the commit is prepared in its log, and the
//     partitions' last stable offsets move past the transaction only when
//     the markers land, a moment later. A failback that listed the old
//     primary's committed offsets right after copying records back found
//     the offset of the first copy and mirrored all 500 copies back to DR
//     (once in 4 runs); it now takes the copies' own offsets
//     (dr.moveProgress). With kfake the markers are in place when it
//     answers: its failback test never met this.
//   - Compaction: Kafka's log cleaner removes superseded records of a
//     compact topic from rolled segments (with segment.ms=100,
//     min.cleanable.dirty.ratio=0.01 and log.cleaner.backoff.ms=200 it
//     left 141 of 1,601 records within seconds), keeping the survivors'
//     offsets, so a consumer's committed offset can name a record that no
//     longer exists. kfake never compacts: offset gaps from compaction,
//     and their translation at failover, are met only here
//     (chaos/lab's TestRealKafkaFailover).
//   - Start-up: seconds and about 200-300 MB per cluster, against milliseconds
//     and a few MB for kfake: use kfake for the many, kafkatest for the
//     guarantees.
package kafkatest
