package admin

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestServer(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "meridian_test_total", Help: "x"})
	reg.MustRegister(c)
	c.Add(3)
	var (
		mu       sync.Mutex
		problems []string
	)
	s, err := Start(Options{Addr: "127.0.0.1:0", Gatherer: reg,
		Status:  func() any { return map[string]int{"legs": 2} },
		Healthy: func() []string { mu.Lock(); defer mu.Unlock(); return problems }})
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + s.Addr().String()
	if code, body := get(t, base+"/healthz"); code != 200 || !strings.Contains(body, `"ok":true`) {
		t.Errorf("healthz = %d %s, want 200 ok", code, body)
	}
	mu.Lock()
	problems = []string{"peer hq-a unreachable"}
	mu.Unlock()
	if code, body := get(t, base+"/healthz"); code != 503 || !strings.Contains(body, "hq-a") {
		t.Errorf("unhealthy healthz = %d %s, want 503 naming the problem", code, body)
	}
	if _, body := get(t, base+"/metrics"); !strings.Contains(body, "meridian_test_total 3") {
		t.Errorf("metrics lack the counter:\n%s", body)
	}
	_, body := get(t, base+"/status")
	var st map[string]int
	if err := json.Unmarshal([]byte(body), &st); err != nil || st["legs"] != 2 {
		t.Errorf("status = %q (%v), want legs=2", body, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}
