// Package ui is the admin server's status page (GET /ui): one HTML page,
// its stylesheet and its script, embedded in the binary. The page is
// read-only: its script fetches /status (and /v1/members, where the
// gateway serves it) from the same origin every two seconds and renders
// them; it sends nothing else. No asset comes from anywhere but the
// admin server, which the Content-Security-Policy set by Handler enforces.
//
// The page renders what it finds: fields it does not know are shown as
// they are, so /status can grow (a fleet view of members and regions)
// before the page learns to lay them out.
package ui

import (
	"embed"
	"net/http"
)

//go:embed index.html app.js style.css
var files embed.FS

// Prefix is the path the page is served under.
const Prefix = "/ui"

// assets are the page's files by path, with their content types.
var assets = []struct{ path, file, ctype string }{
	{Prefix, "index.html", "text/html; charset=utf-8"},
	{Prefix + "/", "index.html", "text/html; charset=utf-8"},
	{Prefix + "/app.js", "app.js", "text/javascript; charset=utf-8"},
	{Prefix + "/style.css", "style.css", "text/css; charset=utf-8"},
}

// CSP is the page's Content-Security-Policy: its own origin only, no
// inline script or style, no framing, no form posts.
const CSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
	"object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Size is the page's weight in bytes: HTML, script and stylesheet.
func Size() int {
	n := 0
	for _, f := range []string{"index.html", "app.js", "style.css"} {
		b, _ := files.ReadFile(f)
		n += len(b)
	}
	return n
}

// Handler serves the page's files under Prefix with strict headers; any
// other path is 404. It does no access control (the admin server does).
func Handler() http.Handler {
	body := map[string][]byte{}
	ctype := map[string]string{}
	for _, a := range assets {
		b, err := files.ReadFile(a.file)
		if err != nil {
			panic("ui: embedded " + a.file + " missing: " + err.Error()) // a build without the files is a bug
		}
		body[a.path], ctype[a.path] = b, a.ctype
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, ok := body[r.URL.Path]
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Content-Security-Policy", CSP)
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		if !ok {
			http.NotFound(w, r)
			return
		}
		// Revalidated on every load, so that an upgraded gateway serves
		// its own page; the files are small.
		h.Set("Cache-Control", "no-cache")
		h.Set("Content-Type", ctype[r.URL.Path])
		if r.Method == http.MethodHead {
			return
		}
		_, _ = w.Write(b)
	})
}
