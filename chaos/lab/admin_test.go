package lab_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/chaos/lab"
	"github.com/meridian-gw/meridian/mirror/dr"
)

func post(t *testing.T, url, body string) (int, string) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestFailoverThroughTheAdminAPI(t *testing.T) {
	l := newLab(t, lab.Options{Admin: true})
	for _, g := range []string{lab.HQGateway, lab.EdgeGateway} {
		if err := l.Start(g); err != nil {
			t.Fatal(err)
		}
	}
	produce(t, l, 5000, 3)
	waitExact(t, l, 5000, time.Minute)
	base := "http://" + l.Gateway(lab.HQGateway).AdminAddr().String()

	if code, body := post(t, base+"/v1/failover", `{"route":"nope"}`); code != http.StatusBadRequest || !strings.Contains(body, `route \"nope\"`) {
		t.Errorf("unknown route: HTTP %d %s, want 400 naming it", code, body)
	}
	// Refused before anything runs: a browser page's cross-origin POST, a
	// page on a rebound name, a GET, an out-of-range drain. The failover
	// below succeeding (not 409) shows that none of them failed over.
	refused := []struct {
		name, method, host, origin, body string
		code                             int
	}{
		{"cross-origin browser POST", "POST", "", "https://evil.example", `{"route":"mirror"}`, http.StatusForbidden},
		{"DNS-rebinding Host", "POST", "evil.example", "http://evil.example", `{"route":"mirror"}`, http.StatusForbidden},
		{"GET", "GET", "", "", "", http.StatusMethodNotAllowed},
		{"drain too long", "POST", "", "", `{"route":"mirror","drain":"11m"}`, http.StatusBadRequest},
		{"drain too short", "POST", "", "", `{"route":"mirror","drain":"10ms"}`, http.StatusBadRequest},
		{"unknown parameter", "POST", "", "", `{"route":"mirror","drian":"10s"}`, http.StatusBadRequest},
	}
	for _, rr := range refused {
		req, _ := http.NewRequest(rr.method, base+"/v1/failover", strings.NewReader(rr.body))
		req.Header.Set("Content-Type", "application/json")
		if rr.host != "" {
			req.Host = rr.host
		}
		if rr.origin != "" {
			req.Header.Set("Origin", rr.origin)
			req.Header.Set("Sec-Fetch-Site", "cross-site")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != rr.code {
			t.Errorf("%s: HTTP %d %s, want %d", rr.name, resp.StatusCode, b, rr.code)
		}
	}
	for _, leg := range l.Gateway(lab.HQGateway).Status().Legs {
		if leg.Fenced != "" {
			t.Fatalf("leg %s fenced after refused requests: %s", leg.Leg, leg.Fenced)
		}
	}
	code, body := post(t, base+"/v1/failover", `{"route":"mirror","dry_run":true}`)
	if code != http.StatusOK || !strings.Contains(body, `"dry_run": true`) || strings.Contains(body, `"fenced": true`) {
		t.Fatalf("dry run: HTTP %d %s", code, body)
	}
	code, body = post(t, base+"/v1/failover", `{"route":"mirror","drain":"10s"}`)
	if code != http.StatusOK {
		t.Fatalf("failover: HTTP %d %s", code, body)
	}
	var reps []dr.FailoverReport
	if err := json.Unmarshal([]byte(body), &reps); err != nil || len(reps) != 1 {
		t.Fatalf("failover reply %q: %v", body, err)
	}
	if r := reps[0]; !r.Fenced || !r.Drained || r.RPORecords != 0 || !r.RPOExact {
		t.Errorf("report %+v, want fenced, drained, exactly 0 at risk", r)
	}
	if code, body := post(t, base+"/v1/failover", `{"route":"mirror"}`); code != http.StatusConflict {
		t.Errorf("second failover: HTTP %d %s, want 409", code, body)
	}
	// The gateway's own status shows the fence once its leg reopens.
	deadline := time.Now().Add(15 * time.Second)
	for {
		fenced := ""
		for _, leg := range l.Gateway(lab.HQGateway).Status().Legs {
			fenced += leg.Fenced
		}
		if fenced != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the receiving gateway never reported its leg fenced")
		}
		produce(t, l, 10, 4) // traffic makes the fenced producer notice
		time.Sleep(200 * time.Millisecond)
	}
	// Failback is an action too: a GET is refused, a dry-run POST plans.
	if code, body := post(t, base+"/v1/failback", `{"route":"mirror","drain":"10s"}`); code != http.StatusBadRequest {
		t.Errorf("failback with a drain: HTTP %d %s, want 400", code, body)
	}
	resp, err := http.Get(base + "/v1/failback")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET /v1/failback: HTTP %d, want 405", resp.StatusCode)
	}
	code, body = post(t, base+"/v1/failback", `{"route":"mirror","dry_run":true}`)
	var fbs []dr.FailbackReport
	if err := json.Unmarshal([]byte(body), &fbs); code != http.StatusOK || err != nil || len(fbs) != 1 || !fbs[0].DryRun {
		t.Errorf("failback dry run: HTTP %d %s, want 200 with one dry-run report", code, body)
	}
}
