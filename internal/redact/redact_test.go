package redact

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestString(t *testing.T) {
	s := New("hunter2-long-secret", "abc", `q"uote-secret`, "hunter2")
	tests := []struct{ in, want string }{
		{"password=hunter2-long-secret!", "password=[redacted]!"},
		{"short abc stays", "short abc stays"}, // under MinLen
		{"hunter2 alone", "[redacted] alone"},
		{`json: "q\"uote-secret"`, `json: "[redacted]"`},
		{"url: ?t=q%22uote-secret", "url: ?t=[redacted]"},
		{"nothing here", "nothing here"},
	}
	for _, tt := range tests {
		if got := s.String(tt.in); got != tt.want {
			t.Errorf("String(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	var nilSet *Set
	if got := nilSet.String("hunter2"); got != "hunter2" {
		t.Errorf("nil set changed %q", got)
	}
}

func TestWriterAddsLater(t *testing.T) {
	var b bytes.Buffer
	s := New()
	w := s.Writer(&b)
	io.WriteString(w, "before s3cr3t-value\n")
	s.Add("s3cr3t-value")
	n, err := io.WriteString(w, "after s3cr3t-value\n")
	if err != nil || n != len("after s3cr3t-value\n") {
		t.Fatalf("Write = %d, %v; want the input length and no error", n, err)
	}
	if got, want := b.String(), "before s3cr3t-value\nafter [redacted]\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestHandler(t *testing.T) {
	s := New("tok-0123456789abcdef")
	h := s.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "31")
		io.WriteString(w, "token is tok-0123456789abcdef\n")
	}))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/status", nil))
	if body := rec.Body.String(); strings.Contains(body, "tok-0123") || body != "token is [redacted]\n" {
		t.Errorf("body = %q, want the token redacted", body)
	}
	if cl := rec.Header().Get("Content-Length"); cl != "" {
		t.Errorf("Content-Length %q kept, want dropped", cl)
	}
}

// BenchmarkWriter is the cost a redacting stderr adds to a typical log line.
func BenchmarkWriter(b *testing.B) {
	line := []byte(`time=2026-12-02T22:18:07.981Z level=INFO msg="link session open" gateway=east-gw component=mirror peer=west-gw addr=127.0.0.1:43721 version=3 window=67108864` + "\n")
	for _, n := range []int{0, 3} {
		s := New()
		for i := range n {
			s.Add(strings.Repeat(string(rune('a'+i)), 20) + "-secret")
		}
		b.Run(map[int]string{0: "no secrets", 3: "3 secrets"}[n], func(b *testing.B) {
			w := s.Writer(io.Discard)
			b.SetBytes(int64(len(line)))
			for b.Loop() {
				_, _ = w.Write(line)
			}
		})
	}
}
