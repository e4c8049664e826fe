package main

import (
	"strings"
	"testing"

	"github.com/meridian-gw/meridian/mirror"
)

// A filtered outbound leg shows what its filter dropped, in the table and
// in a line naming the filter and its latest error.
func TestRenderStatusFiltered(t *testing.T) {
	var b strings.Builder
	renderStatus(&b, &mirror.Status{Gateway: "ge", Region: "east", Legs: []mirror.LegStatus{
		{Leg: "alarms:west/kafka", Route: "alarms", Direction: "out", Peer: "gw", Connected: true, Records: 10,
			Filter: "headers[\"kind\"] == \"alarm\" &&\n  value.rpm > 3000", FilteredRecords: 90, FilteredBytes: 9 << 10,
			FilterErrors: 2, LastFilterError: "record value is not JSON"},
		{Leg: "alarms:west/kafka", Route: "alarms", Direction: "in", Filter: "x"},
	}})
	out := b.String()
	for _, want := range []string{
		"FILTERED",
		"90 (9.0KiB)",
		`leg alarms:west/kafka: filter headers["kind"] == "alarm" && value.rpm > 3000: 90 records (9.0KiB) filtered out, 2 of them filter errors (no match), latest: record value is not JSON`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status output lacks %q:\n%s", want, out)
		}
	}
	if strings.Count(out, "filtered out") != 1 {
		t.Errorf("want one filter line (the inbound end filters nothing):\n%s", out)
	}
}

// A peer's row says which side dialled the link's session.
func TestRenderStatusDialledBy(t *testing.T) {
	var b strings.Builder
	renderStatus(&b, &mirror.Status{Gateway: "hq-a", Region: "hq", Peers: []mirror.PeerStatus{
		{Gateway: "vessel-7-a", Link: "vessel-7--hq", Profile: "geo-satellite", Connected: true, DialledBy: "vessel-7-a"},
	}})
	if out := b.String(); !strings.Contains(out, "vessel-7--hq, dialled by vessel-7-a") {
		t.Errorf("status output lacks who dialled:\n%s", out)
	}
}

// An outbound leg on a route cycle shows the records it did not send back
// (LOOPS) and a line for malformed origin headers it replaced.
func TestRenderStatusLoops(t *testing.T) {
	var b strings.Builder
	renderStatus(&b, &mirror.Status{Gateway: "hq-a", Region: "hq", Legs: []mirror.LegStatus{
		{Leg: "hq-to-dr:dr/kafka", Route: "hq-to-dr", Direction: "out", Peer: "dr-a", Connected: true, Records: 10,
			LoopDroppedRecords: 1234, OriginMalformed: 3},
		{Leg: "dr-to-hq:hq/kafka", Route: "dr-to-hq", Direction: "in"},
	}})
	out := b.String()
	for _, want := range []string{"LOOPS", " 1234 ", "leg hq-to-dr:dr/kafka: 3 records carried a malformed meridian.origin header, replaced (sent as produced at the source)"} {
		if !strings.Contains(out, want) {
			t.Errorf("status output lacks %q:\n%s", want, out)
		}
	}
}

// Each leg shows its path: direct, or via the relay region while its
// direct link is down, with a line for a leg that has switched.
func TestRenderStatusPath(t *testing.T) {
	var b strings.Builder
	renderStatus(&b, &mirror.Status{Gateway: "ship-a", Region: "ship", Peers: []mirror.PeerStatus{
		{Gateway: "hq-a", Link: "ship--hq", Profile: "geo-satellite", Connected: true, DialledBy: "ship-a", Path: "via dr"},
	}, Legs: []mirror.LegStatus{
		{Leg: "telemetry:hq/kafka", Route: "telemetry", Direction: "out", Peer: "hq-a", Path: "via dr", Connected: true,
			PathSwitches: 1, PathSince: "2026-12-04T21:27:19Z", RerouteSeconds: 0.33},
		{Leg: "cfg:ship/kafka", Route: "cfg", Direction: "in", Peer: "hq-a", Path: "direct", Connected: true},
	}})
	out := b.String()
	for _, want := range []string{"PATH", " via dr ", " direct ", "ship--hq, dialled by ship-a, down: legs via dr",
		"leg telemetry:hq/kafka: via dr since 2026-12-04T21:27:19Z, 1 path switches, last reroute 0.3s after its direct link was declared down"} {
		if !strings.Contains(out, want) {
			t.Errorf("status output lacks %q:\n%s", want, out)
		}
	}
}

// A shared leg shows which partitions each gateway sends: the sending
// gateway its own share, the receiver every sender's claim.
func TestRenderStatusShares(t *testing.T) {
	var b strings.Builder
	renderStatus(&b, &mirror.Status{Gateway: "hq-a", Region: "hq", Legs: []mirror.LegStatus{
		{Leg: "telemetry:dr/kafka", Route: "telemetry", Direction: "out", Peer: "dr-a", Connected: true,
			ShareGroup: "meridian.share.telemetry:dr/kafka", SharedPartitions: []string{"t.a/0", "t.a/1", "t.a/2", "t.a/5", "t.b/3"}},
		{Leg: "plant:hq/kafka", Route: "plant", Direction: "in", Connected: true, Shares: []mirror.ShareStatus{
			{Gateway: "plant-a", Generation: 7, Partitions: []string{"p/0", "p/1", "p/2"}},
			{Gateway: "plant-b", Generation: 7, Partitions: []string{"p/3"}, Waiting: []string{"p/2"}},
		}},
	}})
	out := b.String()
	for _, want := range []string{
		"leg telemetry:dr/kafka: shared through consumer group meridian.share.telemetry:dr/kafka; this gateway sends 5 partitions: t.a 0-2,5; t.b 3",
		"leg plant:hq/kafka: plant-a (group generation 7) sends 3 partitions: p 0-2",
		"leg plant:hq/kafka: plant-b (group generation 7) sends 1 partitions: p 3; waits for p 2",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status output lacks %q:\n%s", want, out)
		}
	}
}
