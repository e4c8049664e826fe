package main

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestDemoTopology runs `meridian demo --topology examples/satellite-fleet.yaml`
// as a process, asks one of its gateways for its status and members from
// outside while it runs, and checks the JSON summary.
func TestDemoTopology(t *testing.T) {
	if testing.Short() {
		t.Skip("the fleet demo mirrors for 10 s plus setup and read-back")
	}
	c := startChild(t, "demo", "", "demo", "--topology", "../../examples/satellite-fleet.yaml", "--duration", "10s",
		"--rate", "200", "-o", "json", "--log-level", "warn", "--blackout", "vessel-9--hq:2s:2s",
		// hq-b stops mid-stream: hq-a takes all of HQ's shared partitions.
		"--stop", "hq-b:4s")
	adminRe := regexp.MustCompile(`gateway hq-a +admin (127\.0\.0\.1:\d+)`)
	topoRe := regexp.MustCompile(`running topology \(every address on 127\.0\.0\.1\): (\S+)`)
	var admin, topo string
	waitFor(t, 20*time.Second, 200*time.Millisecond, "the demo prints hq-a's admin address", func() error {
		_, stderr := c.output()
		if m := adminRe.FindStringSubmatch(stderr); m != nil {
			admin = m[1]
			topo = topoRe.FindStringSubmatch(stderr)[1]
			return nil
		}
		return fmt.Errorf("not yet")
	})
	if r := meridian(t, "", nil, "validate", "-f", topo); r.code != 0 {
		t.Errorf("validate the running topology: %v", r)
	}
	if r := meridian(t, "", nil, "status", "--admin", admin, "-o", "json"); r.code != 0 || !strings.Contains(r.stdout, "hq-to-dr") {
		t.Errorf("status --admin %s of the running fleet: %v", admin, r)
	}
	if r := meridian(t, "", nil, "members", "--admin", admin); r.code != 0 || !strings.Contains(r.stdout, "vessel-7-a") {
		t.Errorf("members --admin %s of the running fleet: %v", admin, r)
	}
	drRe := regexp.MustCompile(`gateway dr-a +admin (127\.0\.0\.1:\d+)`)
	_, stderr := c.output()
	dr := drRe.FindStringSubmatch(stderr)[1]
	if r := meridian(t, "", nil, "failover", "--admin", dr, "--route", "hq-to-dr", "--dry-run", "-o", "json"); r.code == 1 || !strings.Contains(r.stdout, "hq-to-dr") {
		t.Errorf("failover --dry-run --admin %s of the running fleet: %v", dr, r)
	} else {
		t.Logf("failover --dry-run: exit %d\n%s", r.code, r.stdout)
	}
	if code := c.wait(t, 50*time.Second); code != 0 {
		c.dump()
		t.Fatalf("meridian demo --topology exited %d", code)
	}
	stdout, stderr := c.output()
	var sum struct {
		Topology string   `json:"running_topology"`
		Exact    *bool    `json:"exact"`
		Stops    []string `json:"stops"`
		Routes   []struct {
			Route      string  `json:"route"`
			To         string  `json:"to"`
			Filter     string  `json:"filter"`
			Produced   *int64  `json:"produced"`
			Mirrored   *int64  `json:"mirrored"`
			Filtered   *int64  `json:"filtered"`
			Lost       *int64  `json:"lost"`
			Duplicated *int64  `json:"duplicated"`
			Reordered  *int64  `json:"reordered"`
			Err        *string `json:"error"`
		} `json:"routes"`
	}
	if err := json.Unmarshal([]byte(stdout), &sum); err != nil {
		t.Fatalf("demo --topology -o json: stdout is not JSON: %v\n%s", err, stdout)
	}
	if len(sum.Stops) != 1 || sum.Stops[0] != "hq-b:4s" {
		t.Errorf("demo --topology summary: stops %q, want [hq-b:4s]", sum.Stops)
	}
	if sum.Exact == nil || !*sum.Exact || len(sum.Routes) != 6 || sum.Topology == "" {
		t.Fatalf("demo --topology summary: exact=%v, %d route legs (want 6), running topology %q\n%s", sum.Exact, len(sum.Routes), sum.Topology, stdout)
	}
	for _, r := range sum.Routes {
		if r.Produced == nil || r.Mirrored == nil || r.Filtered == nil || r.Lost == nil || r.Duplicated == nil || r.Reordered == nil {
			t.Fatalf("route %s: JSON lacks a field: %s", r.Route, stdout)
		}
		if *r.Mirrored == 0 || *r.Lost != 0 || *r.Duplicated != 0 || *r.Reordered != 0 || *r.Mirrored+*r.Filtered != *r.Produced {
			t.Errorf("route %s → %s: produced=%d mirrored=%d filtered=%d lost=%d duplicated=%d reordered=%d", r.Route, r.To,
				*r.Produced, *r.Mirrored, *r.Filtered, *r.Lost, *r.Duplicated, *r.Reordered)
		}
		if r.Filter != "" && *r.Filtered == 0 {
			t.Errorf("route %s has a filter but filtered nothing", r.Route)
		}
	}
	if _, err := os.Stat(topo); err == nil {
		t.Errorf("the demo left its running topology %s behind", topo)
	}
	if strings.Contains(stderr, "panic") {
		t.Errorf("demo stderr mentions a panic:\n%s", stderr)
	}
}
