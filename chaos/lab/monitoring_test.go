package lab_test

import (
	"bufio"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/chaos/lab"
)

// metricName matches the series names a PromQL expression uses.
var metricName = regexp.MustCompile(`\bmeridian_[a-z0-9_]+`)

// monitoringExprs returns the PromQL expressions of the shipped Grafana
// dashboard and alert rules, by where they are.
func monitoringExprs(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	b, err := os.ReadFile("../../examples/monitoring/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Type    string `json:"type"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("grafana-dashboard.json: %v", err)
	}
	for _, p := range dash.Panels {
		if p.Type != "row" && len(p.Targets) == 0 {
			t.Errorf("dashboard panel %q has no query", p.Title)
		}
		for i, tg := range p.Targets {
			out["dashboard panel "+p.Title+" #"+string(rune('A'+i))] = tg.Expr
		}
	}
	rules, err := os.ReadFile("../../examples/monitoring/alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var alert string
	sc := bufio.NewScanner(strings.NewReader(string(rules)))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if a, ok := strings.CutPrefix(line, "- alert: "); ok {
			alert = a
		}
		if e, ok := strings.CutPrefix(line, "expr: "); ok {
			out["alert "+alert] = e
		}
	}
	if len(out) < 10 {
		t.Fatalf("found %d expressions in the dashboard and rules; want them all", len(out))
	}
	return out
}

// TestMonitoringUsesRealMetrics: every metric the shipped dashboard and
// alert rules read exists on the /metrics of a running lab's gateways
// (after some records, with gossip, as a fleet would be).
func TestMonitoringUsesRealMetrics(t *testing.T) {
	exprs := monitoringExprs(t)
	l := newLab(t, lab.Options{Admin: true, Gossip: true})
	startGateways(t, l)
	produce(t, l, 2000, 5)
	waitExact(t, l, 2000, time.Minute)
	// Some series exist only once they have a value (a gossip probe's
	// RTT after the first probe is answered): read until every name is
	// there, or 20 s.
	var missing []string
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		have := map[string]bool{}
		for _, g := range []string{lab.EdgeGateway, lab.HQGateway} {
			resp, err := http.Get("http://" + l.Gateway(g).AdminAddr().String() + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			sc := bufio.NewScanner(resp.Body)
			sc.Buffer(make([]byte, 1<<20), 1<<20)
			for sc.Scan() {
				if f := strings.Fields(sc.Text()); len(f) >= 3 && f[0] == "#" && f[1] == "TYPE" {
					have[f[2]] = true
				}
			}
			resp.Body.Close()
		}
		missing = missing[:0]
		for where, e := range exprs {
			for _, name := range metricName.FindAllString(e, -1) {
				if !have[name] {
					missing = append(missing, name+" (in "+where+")")
				}
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			break
		}
	}
	slices.Sort(missing)
	if len(missing) > 0 {
		t.Errorf("the dashboard and rules read series no gateway exports:\n  %s", strings.Join(missing, "\n  "))
	}
}

// TestAlertRulesPassPromtool runs promtool check rules on the shipped rules.
func TestAlertRulesPassPromtool(t *testing.T) {
	pt, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("promtool is not installed (CI=true: .ci/run installs Debian's prometheus package)")
		}
		t.Skip("promtool is not installed (apt-get install prometheus)")
	}
	out, err := exec.Command(pt, "check", "rules", "../../examples/monitoring/alerts.yaml").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "SUCCESS") {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
	// The rules' own unit tests: fed series as gateways export them, the
	// alerts fire (and stay quiet) when they should.
	cmd := exec.Command(pt, "test", "rules", "alerts_test.yaml")
	cmd.Dir = "../../examples/monitoring"
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "SUCCESS") {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
}
