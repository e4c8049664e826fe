//go:build linux

package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meridian-gw/meridian/chaos/netlab"
	"github.com/meridian-gw/meridian/chaos/netlab/netlabtest"
)

// labLine is one JSON line of `meridian chaos lab -o json`.
type labLine struct {
	Lab      *labInfo       `json:"lab"`
	SelfTest *netlab.Report `json:"self_test"`
	Stats    *netlab.Stats  `json:"stats"`
}

func labLines(t *testing.T, stdout string) []labLine {
	t.Helper()
	var lines []labLine
	for _, s := range strings.Split(strings.TrimSpace(stdout), "\n") {
		var l labLine
		if err := json.Unmarshal([]byte(s), &l); err != nil {
			t.Fatalf("line %q: %v", s, err)
		}
		lines = append(lines, l)
	}
	return lines
}

func TestChaosLabJSON(t *testing.T) {
	netlabtest.Require(t)
	prefix := fmt.Sprintf("mcli%d-", os.Getpid()%100000)
	r := meridian(t, "", nil, "chaos", "lab", "--duration", "1500ms", "--stats-every", "500ms", "--rtt", "20ms",
		"--named", "--netns-prefix", prefix, "-o", "json")
	if r.code != 0 {
		t.Fatalf("meridian chaos lab:\n%v", r)
	}
	lines := labLines(t, r.stdout)
	if len(lines) < 3 || lines[0].Lab == nil {
		t.Fatalf("want a lab line and stats lines:\n%v", r)
	}
	info := lines[0].Lab
	want := []labRegion{
		{Name: "edge", Addr: "198.18.1.1", Prefix: "198.18.1.1/24", Netns: prefix + "edge", NetnsPath: "/run/netns/" + prefix + "edge", ExecPrefix: "ip netns exec " + prefix + "edge"},
		{Name: "hq", Addr: "198.18.2.1", Prefix: "198.18.2.1/24", Netns: prefix + "hq", NetnsPath: "/run/netns/" + prefix + "hq", ExecPrefix: "ip netns exec " + prefix + "hq"},
	}
	if fmt.Sprint(info.Regions) != fmt.Sprint(want) {
		t.Errorf("regions %+v, want %+v", info.Regions, want)
	}
	if len(info.Links) != 1 || info.Links[0].Name != "edge--hq" || !strings.Contains(info.Links[0].Profile, "rtt=20ms") {
		t.Errorf("links %+v, want edge--hq with rtt=20ms", info.Links)
	}
	for _, l := range lines[1:] {
		if l.Stats == nil || len(l.Stats.Links) != 1 {
			t.Errorf("want stats lines after the lab line, got %+v", l)
		}
	}
	for _, reg := range want {
		if _, err := os.Stat(filepath.Join("/run/netns", reg.Netns)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("after exit, /run/netns/%s: %v, want it gone", reg.Netns, err)
		}
	}
}

func TestChaosLabText(t *testing.T) {
	netlabtest.Require(t)
	r := meridian(t, "", nil, "chaos", "lab", "--duration", "500ms", "--regions", "ship,hq,dr", "--profile", "lan")
	if r.code != 0 {
		t.Fatalf("meridian chaos lab:\n%v", r)
	}
	for _, want := range []string{"lab up: 3 regions", "198.18.1.1/24", "198.18.3.1/24", "ship--hq", "hq--dr", "nsenter --net=/proc/", "ship--dr up 0 pkts"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("stdout lacks %q:\n%v", want, r)
		}
	}
}

func TestChaosLabSelfTest(t *testing.T) {
	netlabtest.Require(t)
	// 50 ms each way: a delay tolerance of 5 ms, which a loaded machine keeps.
	r := meridian(t, "", nil, "chaos", "lab", "--self-test", "--rtt", "100ms", "-o", "json")
	if r.code != 0 {
		t.Fatalf("meridian chaos lab --self-test:\n%v", r)
	}
	var rep *netlab.Report
	for _, l := range labLines(t, r.stdout) {
		if l.SelfTest != nil {
			rep = l.SelfTest
		}
	}
	if rep == nil || !rep.Pass || rep.Link != "edge--hq" || len(rep.Results) != 6 {
		t.Errorf("self-test report %+v, want a passing report of edge--hq with 6 results\n%v", rep, r)
	}
}

func TestChaosLabBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--regions", "edge"},
		{"--regions", "edge,Edge"},
		{"--profile", "nope"},
		{"--rate", "fast"},
	} {
		r := meridian(t, "", nil, append([]string{"chaos", "lab", "--duration", "1ms"}, args...)...)
		if r.code != 1 || r.stderr == "" {
			t.Errorf("chaos lab %v:\n%v\nwant exit status 1 and an error", args, r)
		}
	}
}
