package lab_test

import (
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/meridian-gw/meridian/chaos/lab"
	"github.com/meridian-gw/meridian/internal/admin"
	"github.com/meridian-gw/meridian/internal/admin/ui"
	"github.com/meridian-gw/meridian/mirror"
)

// chromiumPath is Debian's chromium, which .ci/run installs.
const chromiumPath = "/usr/bin/chromium"

// browser starts a headless chromium with a fresh profile and returns a
// tab's context; the browser stops at cleanup. Without chromium the test
// skips, except under CI=true, where it fails. Exceptions the page throws,
// CSP violations and errors it logs fail the test.
func browser(t *testing.T) context.Context {
	t.Helper()
	if _, err := exec.LookPath(chromiumPath); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("chromium missing at %s (CI=true: .ci/run installs it): %v", chromiumPath, err)
		}
		t.Skipf("chromium missing at %s: %v", chromiumPath, err)
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromiumPath),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("no-proxy-server", true), // the pages are on 127.0.0.1: never through a proxy
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1400, 1000),
	)
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	t.Cleanup(func() { cancel(); cancelAlloc() })
	began := time.Now()
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	t.Logf("chromium started in %v", time.Since(began).Round(time.Millisecond))
	var mu sync.Mutex
	var thrown []string
	if err := chromedp.Listen(ctx, func(ev any) {
		if e, ok := ev.(*cdplog.EventEntryAdded); ok {
			// A CSP violation, or an error other than the 404 of
			// /v1/members on a gateway that does not gossip.
			if en := e.Entry; en.Source == cdplog.EntrySourceSecurity || en.Level == cdplog.EntryLevelError && !strings.Contains(en.URL, "/v1/members") {
				mu.Lock()
				thrown = append(thrown, fmt.Sprintf("%s %s: %s (%s)", en.Source, en.Level, en.Text, en.URL))
				mu.Unlock()
			}
		}
		if e, ok := ev.(*runtime.EventExceptionThrown); ok {
			mu.Lock()
			d := e.ExceptionDetails
			msg := d.Text
			if d.Exception != nil {
				msg += " " + d.Exception.Description
			}
			thrown = append(thrown, fmt.Sprintf("%s:%d:%d: %s", d.URL, d.LineNumber+1, d.ColumnNumber+1, msg))
			mu.Unlock()
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx, chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := cdp.Call(ctx, t, cdplog.Enable, cdp.Empty{})
		return err
	})); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, s := range thrown {
			t.Errorf("the page threw or logged: %s", s)
		}
	})
	return ctx
}

// artifactDir is where screenshots go: $MERIDIAN_TEST_ARTIFACTS, else a
// temporary directory of the test.
func artifactDir(t *testing.T) string {
	if d := os.Getenv("MERIDIAN_TEST_ARTIFACTS"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return t.TempDir()
}

func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Errorf("screenshot: %v", err)
		return
	}
	path := filepath.Join(artifactDir(t), name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Errorf("screenshot: %v", err)
		return
	}
	t.Logf("screenshot (%d bytes): %s", len(png), path)
}

// pollJS waits until expr (a JavaScript expression) is truthy, or fails.
func pollJS(t *testing.T, ctx context.Context, what, expr string, within time.Duration) {
	t.Helper()
	if _, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr,
		chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(within))); err != nil {
		dump, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
		t.Fatalf("%s: not within %v: %v\npage text:\n%s", what, within, err, dump)
	}
}

// TestStatusPageInBrowser loads a running lab's /ui in headless chromium:
// both regions, their gateways with their gossip state and the link are
// shown, on the receiving gateway's page too; cutting the link turns its
// row red (class down) within seconds.
func TestStatusPageInBrowser(t *testing.T) {
	ctx := browser(t)
	l := newLab(t, lab.Options{Admin: true, Profile: "lan", Gossip: true})
	// Leave the page before the lab's gateways stop (cleanups run last
	// first), so that its polls do not log refused connections.
	t.Cleanup(func() { chromedp.Do(ctx, chromedp.Navigate("about:blank")) })
	for _, g := range []string{lab.HQGateway, lab.EdgeGateway} {
		if err := l.Start(g); err != nil {
			t.Fatal(err)
		}
	}
	produce(t, l, 2000, 7)
	edge := "http://" + l.Gateway(lab.EdgeGateway).AdminAddr().String()
	hq := "http://" + l.Gateway(lab.HQGateway).AdminAddr().String()

	// The fleet from the topology: every region, and every link with the
	// gateways at its ends.
	var links []string
	regions := slices.Sorted(maps.Keys(l.Topo.Regions))
	for _, k := range l.Topo.Links {
		links = append(links, k.Name)
	}
	if len(regions) != 2 || len(links) != 1 {
		t.Fatalf("lab has regions %v, links %v; the test expects two regions and one link", regions, links)
	}

	if err := chromedp.Do(ctx, chromedp.Navigate(edge+"/ui")); err != nil {
		t.Fatal(err)
	}
	for _, r := range regions {
		pollJS(t, ctx, "region "+r+" shown", fmt.Sprintf(`document.querySelector('#regions tr[data-region=%q]')`, r), 15*time.Second)
	}
	for _, g := range []string{lab.EdgeGateway, lab.HQGateway} {
		pollJS(t, ctx, "gateway "+g+" shown", fmt.Sprintf(`document.querySelector('#regions tr[data-gateway=%q]')`, g), 5*time.Second)
		// Its membership state, from the running gossip (/v1/members).
		pollJS(t, ctx, "gateway "+g+" alive", fmt.Sprintf(`(r => r && r.cells[2].innerText.includes('alive') && !r.classList.contains('down'))(document.querySelector('#regions tr[data-gateway=%q]'))`, g), 20*time.Second)
	}
	linkRow := fmt.Sprintf(`document.querySelector('#links tr[data-link=%q][data-to=%q]')`, links[0], lab.HQGateway)
	pollJS(t, ctx, "link "+links[0]+" up", linkRow+` && !`+linkRow+`.classList.contains('down') && `+linkRow+`.innerText.includes('up')`, 30*time.Second)
	pollJS(t, ctx, "legs shown", `document.querySelectorAll('#legs tbody tr').length > 0`, 5*time.Second)
	screenshot(t, ctx, "statuspage-link-up.png")

	// The receiving gateway's page names both regions too (from its legs).
	tab, closeTab := chromedp.NewContext(ctx)
	if err := chromedp.Do(tab, chromedp.Navigate(hq+"/ui")); err != nil {
		t.Fatal(err)
	}
	for _, r := range regions {
		pollJS(t, tab, "hq page: region "+r, fmt.Sprintf(`document.querySelector('#regions tr[data-region=%q]')`, r), 15*time.Second)
	}
	// It has no outbound link, but shows the inbound one as the sender
	// gossips its health: edge-a to hq-a, up.
	inRow := fmt.Sprintf(`document.querySelector('#links tr[data-from=%q][data-to=%q]')`, lab.EdgeGateway, lab.HQGateway)
	pollJS(t, tab, "hq page: inbound link from "+lab.EdgeGateway+" up", `(r => r && !r.classList.contains('down') && r.innerText.includes('gossiped'))(`+inRow+`)`, 20*time.Second)
	screenshot(t, tab, "statuspage-receiver.png")
	closeTab()

	cut := time.Now()
	l.Proxy.SetBlackout(true)
	pollJS(t, ctx, "link row red after the cut", linkRow+` && `+linkRow+`.classList.contains('down')`, 60*time.Second)
	took := time.Since(cut)
	t.Logf("link %s cut: its row turned red (class down) after %.1f s", links[0], took.Seconds())
	if took > 30*time.Second {
		t.Errorf("link row turned red %.1f s after the cut, want within 30 s", took.Seconds())
	}
	color, err := chromedp.Run(ctx, chromedp.Evaluate[string](`getComputedStyle(`+linkRow+`.cells[0]).backgroundColor`))
	if err != nil || color == "" || color == "rgba(0, 0, 0, 0)" {
		t.Errorf("down row's background %q (%v), want the red of tr.down", color, err)
	}
	screenshot(t, ctx, "statuspage-link-down.png")
	// The receiving gateway learns of the cut from gossip (which does not
	// cross the cut link here): its inbound row turns red too.
	tab, closeTab = chromedp.NewContext(ctx)
	if err := chromedp.Do(tab, chromedp.Navigate(hq+"/ui")); err != nil {
		t.Fatal(err)
	}
	pollJS(t, tab, "hq page: inbound link red after the cut", `(r => r && r.classList.contains('down'))(`+inRow+`)`, 30*time.Second)
	t.Logf("hq page: inbound row red %.1f s after the cut", time.Since(cut).Seconds())
	closeTab()

	l.Proxy.SetBlackout(false)
	pollJS(t, ctx, "link row back to normal after the cut ends", linkRow+` && !`+linkRow+`.classList.contains('down')`, 60*time.Second)
	t.Logf("link back up %.1f s after the cut ended", time.Since(cut.Add(took)).Seconds())
}

// syntheticStatus is a /status of a large fleet: this gateway's region and
// nregions-1 others, a peer in each, nlegs legs (some fenced, some with dead
// letters, some down), and a members list (the fleet view) of two gateways
// per region.
func syntheticStatus(nregions, nlegs int) map[string]any {
	st := mirror.Status{Gateway: "r00-a", Region: "r00", UptimeSeconds: 86400 + 3723}
	for i := 1; i < nregions; i++ {
		st.Peers = append(st.Peers, mirror.PeerStatus{
			Gateway: fmt.Sprintf("r%02d-a", i), Address: fmt.Sprintf("10.0.%d.1:7443", i), Link: fmt.Sprintf("r00--r%02d", i),
			Profile: "wan", Connected: i%7 != 0, RTTMillis: float64(10 + i), Failures: int64(i % 3),
		})
		if i%7 == 0 {
			st.Peers[i-1].LastError = "dial: timeout: no recent network activity"
		}
	}
	for i := range nlegs {
		peer := st.Peers[i%len(st.Peers)]
		dir, from, to := "out", "r00/kafka", strings.Split(peer.Gateway, "-")[0]+"/kafka"
		if i%4 == 3 {
			dir, from, to = "in", to, from
		}
		ls := mirror.LegStatus{Leg: fmt.Sprintf("route%03d:%s->%s", i, from, to), Route: fmt.Sprintf("route%03d", i), Direction: dir,
			From: from, To: to, Peer: peer.Gateway, Connected: peer.Connected, Records: int64(1000 * i), RawBytes: int64(100000 * i),
			WireBytes: int64(30000 * i), Partitions: 12, LagRecords: int64(i * 3), LagSeconds: float64(i) / 10}
		if i%25 == 0 {
			ls.DeadLetters = int64(i + 1)
		}
		if dir == "in" && i%40 == 3 {
			ls.Fenced = "failed over (route epoch 2, since 2026-12-04T12:00:00Z)"
		}
		if !peer.Connected {
			ls.LastError = "session lost"
		}
		st.Legs = append(st.Legs, ls)
	}
	var members []map[string]any
	for i := range nregions {
		for _, g := range []string{"a", "b"} {
			state := "alive"
			if i%7 == 0 && i > 0 {
				state = "dead"
			}
			members = append(members, map[string]any{"name": fmt.Sprintf("r%02d-%s", i, g), "region": fmt.Sprintf("r%02d", i),
				"pool": "fleet", "state": state, "address": fmt.Sprintf("10.0.%d.1:7101", i), "rtt_ms": 10 + i, "compatible": true})
		}
	}
	return map[string]any{"gateway": st.Gateway, "region": st.Region, "uptime_seconds": st.UptimeSeconds,
		"peers": st.Peers, "legs": st.Legs, "members": members, "build": map[string]string{"version": "test"}}
}

// TestStatusPageLoadLarge: the page renders a fleet of 50 regions and 200
// legs in under a second from navigation, and weighs under 200 KB.
func TestStatusPageLoadLarge(t *testing.T) {
	const nregions, nlegs = 50, 200
	ctx := browser(t)
	st := syntheticStatus(nregions, nlegs)
	srv, err := admin.Start(admin.Options{Addr: "127.0.0.1:0", Status: func() any { return st }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	base := "http://" + srv.Addr().String()

	weight := 0
	for _, p := range []string{"/ui", "/ui/app.js", "/ui/style.css"} {
		resp, err := http.Get(base + p)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		weight += len(b)
	}
	t.Logf("page weight: %d bytes (HTML+JS+CSS as served; embedded %d)", weight, ui.Size())
	if weight >= 200<<10 {
		t.Errorf("page weighs %d bytes, want under 200 KB", weight)
	}

	done := fmt.Sprintf(`document.querySelectorAll('#legs tbody tr').length === %d && new Set([...document.querySelectorAll('#regions tr[data-region]')].map(r => r.dataset.region)).size === %d && document.documentElement.dataset.firstRenderMs`, nlegs, nregions)
	var firsts []float64
	for run := range 3 {
		began := time.Now()
		if err := chromedp.Do(ctx, chromedp.Navigate(fmt.Sprintf("%s/ui?run=%d", base, run))); err != nil {
			t.Fatal(err)
		}
		pollJS(t, ctx, "all rows rendered", done, 10*time.Second)
		wall := time.Since(began)
		ms, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.documentElement.dataset.firstRenderMs`))
		if err != nil {
			t.Fatal(err)
		}
		var first float64
		fmt.Sscan(ms, &first)
		firsts = append(firsts, first)
		t.Logf("run %d: %d regions, %d legs rendered %.0f ms after navigation start (performance.now); %v as the test saw it", run, nregions, nlegs, first, wall.Round(time.Millisecond))
	}
	sort.Float64s(firsts)
	median := firsts[len(firsts)/2]
	t.Logf("load time with %d regions and %d legs: median %.0f ms of %v", nregions, nlegs, median, firsts)
	if median >= 1000 {
		t.Errorf("page took %.0f ms (median) to render %d regions and %d legs, want under 1000 ms", median, nregions, nlegs)
	}

	// Every resource came from the admin server itself.
	urls, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`performance.getEntriesByType('resource').map(e => e.name)`))
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range urls {
		if !strings.HasPrefix(u, base+"/") {
			t.Errorf("the page loaded %s, not from the admin server", u)
		}
	}
	if !slices.ContainsFunc(urls, func(u string) bool { return strings.HasPrefix(u, base+"/status") }) {
		t.Errorf("resources %v: want /status among them", urls)
	}
	// Down peers and dead members are red; the fenced route, the dead
	// letters, the unknown field are shown.
	checks := map[string]string{
		"down link rows":     `document.querySelectorAll('#links tr.down').length === 7`,
		"dead member rows":   `document.querySelectorAll('#regions tr.down').length >= 14`,
		"fenced routes":      `document.querySelectorAll('#fenced li').length > 0`,
		"dead letters":       `document.querySelectorAll('#dlq li').length > 1`,
		"last errors":        `document.querySelectorAll('#errors li').length > 0`,
		"unknown field kept": `!document.getElementById('other-section').hidden && document.getElementById('other').textContent.includes('"version": "test"')`,
	}
	for _, what := range slices.Sorted(maps.Keys(checks)) {
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](checks[what]))
		if err != nil || !ok {
			t.Errorf("%s: %s is %v (%v)", what, checks[what], ok, err)
		}
	}
	screenshot(t, ctx, "statuspage-50-regions.png")
}

// TestStatusPageFleetView: where the gateway gossips, the page shows the
// fleet from /v1/members (as the membership work serves it: members with
// states, each gateway's gossiped leg health), beside its own /status.
func TestStatusPageFleetView(t *testing.T) {
	ctx := browser(t)
	received := time.Now().Add(-3 * time.Second).UTC().Format(time.RFC3339Nano)
	mux := http.NewServeMux()
	mux.Handle("GET /ui", ui.Handler())
	mux.Handle("GET /ui/", ui.Handler())
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"gateway":"hq-a","region":"hq","uptime_seconds":60,"peers":null,"legs":[
			{"leg":"orders:ship/kafka","route":"orders","direction":"in","from":"ship/kafka","to":"hq/kafka","peer":"ship-a","connected":true,
			 "records":10,"lag_records":0,"lag_seconds":0,"dead_letters":0}]}`)
	})
	mux.HandleFunc("GET /v1/members", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"gateway":"hq-a","members":[
			{"name":"hq-a","region":"hq","pool":"fleet","state":"alive","reach":"self","address":"10.0.0.1:7101","compatible":true,"incarnation":1},
			{"name":"ship-a","region":"ship","pool":"fleet","state":"suspect","reach":"gossip","address":"10.9.0.1:7101","rtt_ms":612.5,"compatible":true},
			{"name":"dc2-a","region":"dc2","pool":"fleet","state":"dead","reach":"direct","address":"10.2.0.1:7101","compatible":true}],
			"health":{"ship-a":{"Gateway":"ship-a","Incarnation":1,"Seq":9,"Received":%q,"Legs":[
			  {"Leg":"orders:hq/kafka","Peer":"hq-a","Up":true,"RTT":612500000,"Loss":0.031,"Goodput":2500000,"Backlog":4096},
			  {"Leg":"telemetry:dc2/kafka","Peer":"dc2-a","Up":false,"RTT":0,"Loss":1,"Goodput":0,"Backlog":1048576}]}}}`, received)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	if err := chromedp.Do(ctx, chromedp.Navigate(srv.URL+"/ui")); err != nil {
		t.Fatal(err)
	}
	pollJS(t, ctx, "fleet rendered", `document.querySelectorAll('#links tbody tr').length === 2`, 10*time.Second)
	checks := map[string]string{
		"regions":          `['dc2','hq','ship'].every(r => document.querySelector('#regions tr[data-region="' + r + '"]'))`,
		"dead member red":  `document.querySelector('#regions tr[data-gateway="dc2-a"]').classList.contains('down')`,
		"suspect amber":    `document.querySelector('#regions tr[data-gateway="ship-a"]').classList.contains('warn')`,
		"member state":     `document.querySelector('#regions tr[data-gateway="ship-a"]').innerText.includes('suspect (fleet)')`,
		"gossiped leg up":  `(r => r && !r.classList.contains('down') && r.innerText.includes('613 ms') && r.innerText.includes('3.10 %') && r.innerText.includes('2.5 Mbit/s'))(document.querySelector('#links tr[data-from="ship-a"][data-to="hq-a"]'))`,
		"gossiped leg red": `document.querySelector('#links tr[data-from="ship-a"][data-to="dc2-a"]').classList.contains('down')`,
		"report age":       `document.querySelector('#links tr[data-to="dc2-a"]').innerText.includes('s ago')`,
	}
	for _, what := range slices.Sorted(maps.Keys(checks)) {
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](checks[what]))
		if err != nil || !ok {
			t.Errorf("%s: %s is %v (%v)", what, checks[what], ok, err)
		}
	}
	screenshot(t, ctx, "statuspage-fleet.png")
}
