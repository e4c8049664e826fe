package profile

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/meridian-gw/meridian/internal/units"
)

// Error is one problem found while parsing a profile.
type Error struct {
	Profile string
	Line    int    // 1-based; 0 when unknown
	Column  int    // 1-based; 0 when unknown
	Path    string // e.g. "link.loss" or "events[1].every"; "" for the whole document
	Reason  string
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "profile %q: ", e.Profile)
	if e.Line > 0 {
		fmt.Fprintf(&b, "%d:%d: ", e.Line, e.Column)
	}
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Reason)
	return b.String()
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// Parse decodes the profile called name from YAML (see the package doc for
// the schema). Decoding is strict, and every problem is reported, each as an
// *Error, joined with errors.Join.
func Parse(name string, data []byte) (*Profile, error) {
	if !nameRE.MatchString(name) {
		return nil, &Error{Profile: name, Reason: "name must be letters, digits, '.', '_' or '-', starting with a letter or digit"}
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &Error{Profile: name, Reason: "empty document"}
		}
		return nil, fmt.Errorf("profile %q: %w", name, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		line := 0
		if err == nil {
			line = extra.Line
		}
		return nil, &Error{Profile: name, Line: line, Column: 1, Reason: "more than one YAML document"}
	}

	ps := &parser{name: name, pos: map[string]*yaml.Node{}}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	p := ps.profile(root)
	if len(ps.errs) == 0 {
		// Cross-field rules, reported at the value that set them. A problem
		// that up and down both inherit from link is reported once, as link's.
		type problem struct {
			n      *yaml.Node
			path   string
			reason string
		}
		var probs []*problem
		byKey := map[string]*problem{}
		p.problems(func(path, format string, args ...any) {
			n, linkPath := ps.locate(path)
			reason := fmt.Sprintf(format, args...)
			key := fmt.Sprintf("%p\x00%s", n, reason)
			if linkPath != "" {
				key = linkPath + "\x00" + reason
			}
			if pr, ok := byKey[key]; ok && linkPath != "" {
				pr.path = linkPath
				return
			}
			pr := &problem{n: n, path: path, reason: reason}
			byKey[key] = pr
			probs = append(probs, pr)
		})
		for _, pr := range probs {
			ps.errAt(pr.n, pr.path, "%s", pr.reason)
		}
	}
	if len(ps.errs) > 0 {
		return nil, errors.Join(ps.errs...)
	}
	return p, nil
}

type parser struct {
	name string
	errs []error
	pos  map[string]*yaml.Node // path -> value node, for later errors
	root *yaml.Node
}

func (ps *parser) errAt(n *yaml.Node, path, format string, args ...any) {
	e := &Error{Profile: ps.name, Path: path, Reason: fmt.Sprintf(format, args...)}
	if n != nil {
		e.Line, e.Column = n.Line, n.Column
	}
	ps.errs = append(ps.errs, e)
}

// locate finds the node that set path, for an error found after parsing,
// falling back to the closest enclosing section. A value of "up" or "down"
// may have come from "link"; then linkPath is that link path.
func (ps *parser) locate(path string) (n *yaml.Node, linkPath string) {
	dir, rest, _ := strings.Cut(path, ".")
	viaLink := dir == "up" || dir == "down"
	for p := path; ; {
		if n, ok := ps.pos[p]; ok {
			return n, ""
		}
		if viaLink {
			lp := "link"
			if _, r, ok := strings.Cut(p, "."); ok {
				lp += "." + r
			}
			if n, ok := ps.pos[lp]; ok {
				return n, "link." + rest
			}
		}
		i := strings.LastIndexAny(p, ".[")
		if i < 0 {
			return ps.root, ""
		}
		p = p[:i]
	}
}

var (
	topKeys   = []string{"description", "link", "up", "down", "events"}
	paramKeys = []string{"delay", "jitter", "loss", "burst_loss", "rate", "queue", "mtu", "reorder", "reorder_gap", "duplicate"}
	burstKeys = []string{"p", "r", "bad_loss", "good_loss"}
	eventKeys = []string{"kind", "direction", "at", "every", "duration", "extra_delay", "loss", "ramp", "rate_factor"}
)

func (ps *parser) profile(root *yaml.Node) *Profile {
	ps.root = root
	p := &Profile{Name: ps.name}
	base := Params{MTU: DefaultMTU}
	var upN, downN, eventsN *yaml.Node
	ps.mapping(root, "", topKeys, func(key string, v *yaml.Node) {
		switch key {
		case "description":
			if s, ok := ps.scalar(v, key); ok {
				p.Description = s
			}
		case "link":
			ps.params(v, "link", &base)
		case "up":
			upN = v
		case "down":
			downN = v
		case "events":
			eventsN = v
		}
	})
	p.Up, p.Down = base, base
	if upN != nil {
		ps.params(upN, "up", &p.Up)
	}
	if downN != nil {
		ps.params(downN, "down", &p.Down)
	}
	if eventsN != nil {
		p.Events = ps.events(eventsN)
	}
	return p
}

// mapping walks a mapping node, rejecting duplicate and unknown keys.
func (ps *parser) mapping(n *yaml.Node, path string, known []string, f func(key string, v *yaml.Node)) {
	n = deref(n)
	if n.Kind != yaml.MappingNode {
		if path == "" {
			ps.errAt(n, path, "want a mapping of %s, got %s", strings.Join(known, ", "), kindName(n))
		} else {
			ps.errAt(n, path, "want a mapping, got %s", kindName(n))
		}
		return
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := deref(n.Content[i]), n.Content[i+1]
		kp := join(path, k.Value)
		switch {
		case k.Kind != yaml.ScalarNode:
			ps.errAt(k, path, "keys must be plain strings")
			continue
		case seen[k.Value]:
			ps.errAt(k, kp, "duplicate key")
			continue
		case !slices.Contains(known, k.Value):
			ps.errAt(k, kp, "unknown field (want one of %s)", strings.Join(known, ", "))
			continue
		}
		seen[k.Value] = true
		ps.pos[kp] = deref(v)
		f(k.Value, v)
	}
}

func (ps *parser) params(n *yaml.Node, path string, p *Params) {
	ps.mapping(n, path, paramKeys, func(key string, v *yaml.Node) {
		fp := path + "." + key
		switch key {
		case "delay":
			ps.duration(v, fp, &p.Delay)
		case "jitter":
			ps.duration(v, fp, &p.Jitter)
		case "loss":
			ps.prob(v, fp, &p.Loss)
		case "burst_loss":
			if p.Burst == (GilbertElliott{}) {
				p.Burst.BadLoss = 1
			}
			ps.mapping(v, fp, burstKeys, func(key string, v *yaml.Node) {
				bp := fp + "." + key
				switch key {
				case "p":
					ps.prob(v, bp, &p.Burst.P)
				case "r":
					ps.prob(v, bp, &p.Burst.R)
				case "bad_loss":
					ps.prob(v, bp, &p.Burst.BadLoss)
				case "good_loss":
					ps.prob(v, bp, &p.Burst.GoodLoss)
				}
			})
		case "rate":
			s, ok := ps.scalar(v, fp)
			if !ok {
				return
			}
			r, err := ParseRate(s)
			if err != nil {
				ps.errAt(v, fp, "%v", err)
				return
			}
			p.Rate = r
		case "queue":
			s, ok := ps.scalar(v, fp)
			if !ok {
				return
			}
			b, d, err := parseQueue(s)
			if err != nil {
				ps.errAt(v, fp, "%v", err)
				return
			}
			p.QueueBytes, p.QueueDelay = b, d
		case "mtu":
			ps.integer(v, fp, &p.MTU)
		case "reorder":
			ps.prob(v, fp, &p.Reorder)
		case "reorder_gap":
			ps.duration(v, fp, &p.ReorderGap)
		case "duplicate":
			ps.prob(v, fp, &p.Duplicate)
		}
	})
}

func (ps *parser) events(n *yaml.Node) []Event {
	n = deref(n)
	if n.Kind != yaml.SequenceNode {
		ps.errAt(n, "events", "want a list of events, got %s", kindName(n))
		return nil
	}
	out := make([]Event, 0, len(n.Content))
	for i, en := range n.Content {
		path := fmt.Sprintf("events[%d]", i)
		ps.pos[path] = deref(en)
		var e Event
		var haveAt, haveKind, haveDuration bool
		ps.mapping(en, path, eventKeys, func(key string, v *yaml.Node) {
			fp := path + "." + key
			switch key {
			case "kind":
				haveKind = true
				s, ok := ps.scalar(v, fp)
				if !ok {
					return
				}
				switch s {
				case "blackout":
					e.Kind = EventBlackout
				case "handover":
					e.Kind = EventHandover
				case "rain_fade":
					e.Kind = EventRainFade
				default:
					ps.errAt(v, fp, "unknown kind %q (want blackout, handover or rain_fade)", s)
				}
			case "direction":
				s, ok := ps.scalar(v, fp)
				if !ok {
					return
				}
				switch s {
				case "both":
					e.Dir = Both
				case "up":
					e.Dir = Up
				case "down":
					e.Dir = Down
				default:
					ps.errAt(v, fp, "unknown direction %q (want both, up or down)", s)
				}
			case "at":
				haveAt = true
				ps.duration(v, fp, &e.At)
			case "every":
				ps.duration(v, fp, &e.Every)
			case "duration":
				haveDuration = true
				ps.duration(v, fp, &e.Duration)
			case "extra_delay":
				ps.duration(v, fp, &e.ExtraDelay)
			case "loss":
				ps.prob(v, fp, &e.Loss)
			case "ramp":
				ps.duration(v, fp, &e.Ramp)
			case "rate_factor":
				ps.prob(v, fp, &e.RateFactor)
			}
		})
		if deref(en).Kind != yaml.MappingNode {
			continue
		}
		if !haveKind {
			ps.errAt(en, path+".kind", "missing (want blackout, handover or rain_fade)")
		}
		if !haveDuration {
			ps.errAt(en, path+".duration", "missing")
		}
		if !haveAt {
			if e.Every == 0 {
				ps.errAt(en, path+".at", "missing: a one-off event (no every) needs at")
			}
			e.At = e.Every
		}
		out = append(out, e)
	}
	return out
}

func (ps *parser) scalar(n *yaml.Node, path string) (string, bool) {
	n = deref(n)
	if n.Kind != yaml.ScalarNode {
		ps.errAt(n, path, "want a value, got %s", kindName(n))
		return "", false
	}
	if n.ShortTag() == "!!null" {
		ps.errAt(n, path, "missing value")
		return "", false
	}
	return strings.TrimSpace(n.Value), true
}

func (ps *parser) duration(n *yaml.Node, path string, out *time.Duration) {
	s, ok := ps.scalar(n, path)
	if !ok {
		return
	}
	d, err := units.ParseDuration(s)
	if err != nil {
		ps.errAt(n, path, "%q is not a duration (want e.g. 300ms, 1.5s, 2m)", s)
		return
	}
	*out = d
}

func (ps *parser) prob(n *yaml.Node, path string, out *float64) {
	s, ok := ps.scalar(n, path)
	if !ok {
		return
	}
	x, err := parseProb(s)
	if err != nil {
		ps.errAt(n, path, "%v", err)
		return
	}
	*out = x
}

func (ps *parser) integer(n *yaml.Node, path string, out *int) {
	s, ok := ps.scalar(n, path)
	if !ok {
		return
	}
	x, err := strconv.Atoi(s)
	if err != nil {
		ps.errAt(n, path, "%q is not an integer", s)
		return
	}
	*out = x
}

// parseProb reads "1.5%" or "0.015".
func parseProb(s string) (float64, error) {
	num, pct := strings.CutSuffix(s, "%")
	x, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
	if err != nil || math.IsNaN(x) || math.IsInf(x, 0) {
		return 0, fmt.Errorf("%q is not a probability (want e.g. 1%% or 0.01)", s)
	}
	if pct {
		x /= 100
	}
	if x < 0 || x > 1 {
		if !pct && x <= 100 {
			return 0, fmt.Errorf("%v is over 1 (write %v%% for a percentage)", x, x)
		}
		return 0, fmt.Errorf("%s must be within [0, 1] (0%% to 100%%)", s)
	}
	return x, nil
}

// ParseRate reads a link rate in bit/s in the units grammar (package
// internal/units): "10Mbit", "10Mbit/s", "512kbit", "1.5Gbit"; or "0" or
// "unlimited" for no limit (0). A rate needs a unit, and must lie within
// 8 bit/s and 1000Gbit.
func ParseRate(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "unlimited" || s == "0" {
		return 0, nil
	}
	r, err := units.ParseBitRate(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a rate: %w", s, reason(err))
	}
	if r > 1e12 {
		return 0, fmt.Errorf("%q is too fast (limit 1000Gbit)", s)
	}
	if r < 8 {
		return 0, fmt.Errorf("%q is too slow (at least 8 bit/s)", s)
	}
	return int64(r), nil
}

// parseQueue reads "200ms" (time at the rate) or "256KiB" / "64000"
// (bytes), in the units grammar; "0" is the default queue.
func parseQueue(s string) (bytes int, delay time.Duration, err error) {
	if s == "0" {
		return 0, 0, nil
	}
	if d, err := units.ParseDuration(s); err == nil {
		return 0, d, nil
	}
	n, err := units.ParseByteSize(s)
	if err != nil {
		return 0, 0, fmt.Errorf("%q is not a queue size (want a time such as 200ms or a size such as 256KiB): %w", s, reason(err))
	}
	if n > 1<<30 {
		return 0, 0, fmt.Errorf("%q is larger than 1GiB", s)
	}
	return int(n), 0, nil
}

// reason is the reason of a units error, without the value it repeats.
func reason(err error) error {
	if ue, ok := errors.AsType[*units.Error](err); ok {
		return ue.Err
	}
	return err
}

func deref(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.ShortTag() == "!!null" {
			return "nothing"
		}
		return fmt.Sprintf("%q", n.Value)
	case yaml.DocumentNode:
		return "a document"
	}
	return "an alias"
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}
