package admin

import (
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/meridian-gw/meridian/internal/admin/ui"
)

func TestStatusPage(t *testing.T) {
	f := newFixture(t, Options{})
	for _, tc := range []struct{ path, ctype, has string }{
		{"/ui", "text/html", `<script src="/ui/app.js"`},
		{"/ui/", "text/html", `<link rel="stylesheet" href="/ui/style.css">`},
		{"/ui/app.js", "text/javascript", `getJSON("/status")`},
		{"/ui/style.css", "text/css", "tr.down td"},
	} {
		w := f.do(req{method: http.MethodGet, path: tc.path})
		if w.Code != http.StatusOK || !strings.HasPrefix(w.Header().Get("Content-Type"), tc.ctype) || !strings.Contains(w.Body.String(), tc.has) {
			t.Errorf("GET %s: HTTP %d %s, %d bytes; want 200 %s containing %q", tc.path, w.Code, w.Header().Get("Content-Type"), w.Body.Len(), tc.ctype, tc.has)
		}
		for h, want := range map[string]string{
			"X-Content-Type-Options":  "nosniff",
			"Content-Security-Policy": ui.CSP,
			"X-Frame-Options":         "DENY",
			"Cache-Control":           "no-cache",
		} {
			if got := w.Header().Get(h); got != want {
				t.Errorf("GET %s: %s = %q, want %q", tc.path, h, got, want)
			}
		}
	}
	if w := f.do(req{method: http.MethodGet, path: "/ui/nope.js"}); w.Code != http.StatusNotFound {
		t.Errorf("GET /ui/nope.js: HTTP %d, want 404", w.Code)
	}
	if w := f.do(req{method: http.MethodPost, path: "/ui", body: "{}"}); w.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST /ui: HTTP %d, want 405 (the page is read-only)", w.Code)
	}
	if !strings.Contains(ui.CSP, "default-src 'self'") || strings.Contains(ui.CSP, "unsafe") {
		t.Errorf("CSP %q: want default-src 'self' and nothing unsafe", ui.CSP)
	}
}

// TestStatusPageAccess: /ui is a read like /status, under the same rule.
func TestStatusPageAccess(t *testing.T) {
	for _, tc := range []struct {
		name  string
		open  []string
		token string
		code  int
	}{
		{"no auth configured", nil, "", http.StatusOK},
		{"token, default open list", nil, "", http.StatusUnauthorized},
		{"token sent", nil, testToken, http.StatusOK},
		{"ui and status open", []string{"status", "ui"}, "", http.StatusOK},
		{"status open only", []string{"status"}, "", http.StatusUnauthorized},
	} {
		opts := Options{Open: tc.open}
		if tc.name != "no auth configured" {
			opts.Token = testToken
		}
		f := newFixture(t, opts)
		w := f.do(req{method: http.MethodGet, path: "/ui", token: tc.token})
		if w.Code != tc.code {
			t.Errorf("%s: GET /ui: HTTP %d, want %d", tc.name, w.Code, tc.code)
		}
	}
	opts := Options{Addr: "127.0.0.1:0", Token: testToken, Open: []string{"ui"}, Status: func() any { return nil }}
	if _, err := newHandler(&opts); err == nil || !strings.Contains(err.Error(), `"ui" without "status"`) {
		t.Errorf("open [ui] without status: err %v, want one saying ui needs status", err)
	}
}

// TestStatusPageSelfContained: the page is small and loads nothing from
// elsewhere, no inline script or style (the CSP forbids them anyway).
func TestStatusPageSelfContained(t *testing.T) {
	if n := ui.Size(); n <= 0 || n >= 200<<10 {
		t.Errorf("page weighs %d bytes, want under 200 KB", n)
	}
	t.Logf("page weight (HTML+JS+CSS): %d bytes", ui.Size())
	f := newFixture(t, Options{})
	html := f.do(req{method: http.MethodGet, path: "/ui"}).Body.String()
	all := html + f.do(req{method: http.MethodGet, path: "/ui/app.js"}).Body.String() + f.do(req{method: http.MethodGet, path: "/ui/style.css"}).Body.String()
	for _, bad := range []*regexp.Regexp{
		regexp.MustCompile(`(?i)(src|href)\s*=\s*"(https?:)?//`), // an asset from another origin
		regexp.MustCompile(`(?i)@import|url\(\s*['"]?(https?:)?//`),
		regexp.MustCompile(`(?i)<script(?:\s[^>]*)?>\s*[^<\s]`), // an inline script
		regexp.MustCompile(`(?i)\son[a-z]+\s*=`),                // an inline handler
		regexp.MustCompile(`(?i)\sstyle\s*=`),                   // an inline style
		regexp.MustCompile(`(?i)method\s*:\s*"(POST|PUT|DELETE|PATCH)"`),
	} {
		if m := bad.FindString(all); m != "" {
			t.Errorf("page contains %q (matches %s)", m, bad)
		}
	}
	for _, s := range regexp.MustCompile(`<script[^>]*>`).FindAllString(html, -1) {
		if !strings.Contains(s, `src="/ui/`) {
			t.Errorf("script tag %s does not load from /ui/", s)
		}
	}
}
