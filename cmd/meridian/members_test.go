package main

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/internal/gateway"
	"github.com/meridian-gw/meridian/topology/membership"
)

// fakeGossipAdmin serves /v1/members and /v1/gossip/keys on 127.0.0.1 and
// records the key requests.
func fakeGossipAdmin(t *testing.T) (addr string, bodies func() []map[string]string) {
	t.Helper()
	var mu sync.Mutex
	var got []map[string]string
	since := time.Now().Add(-time.Minute)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/members", func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(gateway.MembersJSON{Gateway: "hq-a", Members: []gateway.MemberJSON{
			{Name: "hq-a", Region: "hq", Pool: "fleet", State: "alive", ProtoMin: 1, ProtoMax: 4, Reach: "self", Addr: "127.0.0.1:7101", Compatible: true},
			{Name: "old-a", Region: "hq", Pool: "fleet", State: "alive", ProtoMin: 9, ProtoMax: 9, Reach: "direct"},
			{Name: "v7-a", Region: "vessel-7", Pool: "fleet", State: "suspect", Since: since, ProtoMin: 1, ProtoMax: 3, Reach: "direct", RTTMillis: 612.5, Compatible: true},
			{Name: "hq-b", Region: "hq", Pool: "fleet", State: "left", Since: since, ProtoMin: 1, ProtoMax: 4, Compatible: true},
		}, Health: map[string]membership.Report{"v7-a": {Health: membership.Health{Gateway: "v7-a", Seq: 3, Legs: []membership.LegHealth{
			{Leg: "ship-to-hq", Peer: "hq-a", Up: true, RTT: 610 * time.Millisecond, Loss: 0.01, Goodput: 8_900_000, Backlog: 12},
		}}, Received: time.Now()}}})
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"gateway":"hq-a","region":"hq","uptime_seconds":5,"peers":[],"legs":[]}`))
	})
	mux.HandleFunc("POST /v1/gossip/keys", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var req map[string]string
		_ = json.Unmarshal(b, &req)
		mu.Lock()
		got = append(got, req)
		mu.Unlock()
		if req["op"] == "use" && req["fingerprint"] == "bad" {
			w.WriteHeader(http.StatusBadRequest)
			_ = json.NewEncoder(w).Encode(map[string]string{"error": `no gossip key with fingerprint "bad"`})
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"gateway": "hq-a", "keys": []membership.KeyInfo{{Fingerprint: "00aa", Primary: true}, {Fingerprint: "11bb"}}})
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &httptest.Server{Listener: ln, Config: &http.Server{Handler: mux}}
	srv.Start()
	t.Cleanup(srv.Close)
	return ln.Addr().String(), func() []map[string]string {
		mu.Lock()
		defer mu.Unlock()
		return append([]map[string]string(nil), got...)
	}
}

func TestMembersCommand(t *testing.T) {
	addr, _ := fakeGossipAdmin(t)
	r := meridian(t, "", nil, "members", "--admin", addr)
	if r.code != 0 {
		t.Fatalf("members: %v", r)
	}
	for _, want := range []string{"v7-a", "vessel-7", "suspect", "1-3", "direct", "612.5ms", "left", "ship-to-hq", "8.9Mbit/s", "1.00%", "alive (incompatible protocol)"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("members output lacks %q:\n%s", want, r.stdout)
		}
	}
	r = meridian(t, "", nil, "members", "--admin", addr, "-o", "json")
	var ms gateway.MembersJSON
	if err := json.Unmarshal([]byte(r.stdout), &ms); err != nil || r.code != 0 || len(ms.Members) != 4 {
		t.Errorf("members -o json: %v, %v", err, r)
	}
}

func TestGossipKeysCommand(t *testing.T) {
	addr, bodies := fakeGossipAdmin(t)
	key := "MDEyMzQ1Njc4OWFiY2RlZg=="
	if r := meridian(t, "", []string{gossipKeyEnv + "=" + key}, "gossip", "keys", "install", "--admin", addr); r.code != 0 || !strings.Contains(r.stdout, "00aa (primary)") {
		t.Fatalf("install: %v", r)
	}
	if r := meridian(t, "", nil, "gossip", "keys", "use", "11bb", "--admin", addr); r.code != 0 {
		t.Fatalf("use: %v", r)
	}
	if r := meridian(t, "", nil, "gossip", "keys", "remove", "00aa", "--admin", addr, "-o", "json"); r.code != 0 || !strings.Contains(r.stdout, `"fingerprint"`) {
		t.Fatalf("remove: %v", r)
	}
	if r := meridian(t, "", nil, "gossip", "keys", "list", "--admin", addr); r.code != 0 {
		t.Fatalf("list: %v", r)
	}
	if r := meridian(t, "", nil, "gossip", "keys", "use", "bad", "--admin", addr); r.code != 1 || !strings.Contains(r.stderr, `no gossip key with fingerprint "bad"`) {
		t.Errorf("use bad: %v", r)
	}
	if r := meridianEnv(t, "", []string{"PATH=/usr/bin:/bin"}, "gossip", "keys", "install", "--admin", addr); r.code != 2 || !strings.Contains(r.stderr, gossipKeyEnv) {
		t.Errorf("install without a key: %v", r)
	}
	got := bodies()
	want := []map[string]string{{"op": "install", "key": key}, {"op": "use", "fingerprint": "11bb"}, {"op": "remove", "fingerprint": "00aa"}, {"op": "list"}, {"op": "use", "fingerprint": "bad"}}
	if len(got) != len(want) {
		t.Fatalf("requests %v, want %v", got, want)
	}
	for i := range want {
		for k, v := range want[i] {
			if got[i][k] != v {
				t.Errorf("request %d: %v, want %v", i, got[i], want[i])
			}
		}
	}
}

// TestStatusShowsFleet: status adds the fleet from gossip, every region's
// members and every gossiped leg, when the gateway gossips.
func TestStatusShowsFleet(t *testing.T) {
	addr, _ := fakeGossipAdmin(t)
	r := meridian(t, "", nil, "status", "--admin", addr)
	if r.code != 0 {
		t.Fatalf("status: %v", r)
	}
	for _, want := range []string{"fleet (gossip, as hq-a sees it)", "vessel-7", "v7-a suspect", "hq-b left", "ship-to-hq", "LAG"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("status output lacks %q:\n%s", want, r.stdout)
		}
	}
}
