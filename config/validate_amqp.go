package config

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// amqpSASLMechanisms are the SASL mechanisms of an AMQP broker (a link's
// or a cluster's).
var amqpSASLMechanisms = []string{"plain", "anonymous", "external"}

// amqpModes are the CloudEvents content modes an amqp cluster writes.
var amqpModes = []string{"binary", "structured"}

// maxAMQPMessageBytes is the most amqp.max_message_bytes may be.
const maxAMQPMessageBytes = 64 << 20

// amqp checks the broker of an amqp link.
func (v *validator) amqp(lp string, a *AMQP) {
	ap := lp + ".amqp"
	if a == nil {
		v.errorf(ap, `missing; transport "amqp" needs the broker: url (amqp:// or amqps://), and optionally address_prefix, sasl and tls`)
		return
	}
	v.amqpBroker(ap, a.URL, a.TLS, a.SASL, "address_prefix")
	v.addressPrefix(ap, a.AddressPrefix)
}

func (v *validator) addressPrefix(ap, prefix string) {
	if strings.ContainsAny(prefix, " \t\n") {
		v.errorf(ap+".address_prefix", "must not contain white space, got %q", prefix)
	}
}

// amqpBroker checks an AMQP broker's url, tls and sasl at ap; addrField
// names the setting the addresses come from, for the url's path.
func (v *validator) amqpBroker(ap, rawURL string, t *TLS, s *SASL, addrField string) {
	tlsOn := t != nil && (t.Enabled == nil || *t.Enabled)
	if rawURL == "" {
		v.errorf(ap+".url", "missing; the broker's amqp://host:port or amqps://host:port")
	} else if u, err := url.Parse(rawURL); err != nil {
		v.errorf(ap+".url", "not a URL: %v", errors.Unwrap(err))
	} else {
		switch {
		case u.Scheme != "amqp" && u.Scheme != "amqps":
			v.errorf(ap+".url", "scheme %q: want amqp:// or amqps:// (TLS)", u.Scheme)
		case u.User != nil:
			v.errorf(ap+".url", "holds credentials; put them in sasl (username, password: ${ENV}) instead")
		case u.Hostname() == "":
			v.errorf(ap+".url", "no host; want amqp://host:port")
		case u.Path != "" && u.Path != "/" || u.RawQuery != "":
			v.errorf(ap+".url", "has a path or query (%q); the addresses come from %s", u.Path+u.RawQuery, addrField)
		case u.Scheme == "amqp" && tlsOn:
			v.errorf(ap+".tls", "set, but the url %q is plain amqp://; use amqps:// for TLS", rawURL)
		}
		if p := u.Port(); p != "" {
			if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
				v.errorf(ap+".url", "port %q out of range 1-65535", p)
			}
		}
	}
	if tlsOn {
		switch {
		case t.CertFile != "" && t.KeyFile == "":
			v.errorf(ap+".tls.key_file", "required when cert_file is set (client certificate needs its key)")
		case t.KeyFile != "" && t.CertFile == "":
			v.errorf(ap+".tls.cert_file", "required when key_file is set (client key needs its certificate)")
		}
	}
	if s != nil {
		sp := ap + ".sasl"
		switch {
		case s.Mechanism == "":
			v.errorf(sp+".mechanism", "missing; use %s", orList(amqpSASLMechanisms))
		case !slices.Contains(amqpSASLMechanisms, s.Mechanism):
			v.errorf(sp+".mechanism", "unknown SASL mechanism %q for an AMQP broker; use %s", s.Mechanism, orList(amqpSASLMechanisms))
		case s.Mechanism == "plain":
			if s.Username == "" {
				v.errorf(sp+".username", "missing; sasl plain needs a username")
			}
			if s.Password == "" {
				v.errorf(sp+".password", "missing; sasl plain needs a password (use ${ENV} to keep it out of the file)")
			}
		case s.Mechanism == "external" && (t == nil || t.CertFile == ""):
			v.errorf(sp+".mechanism", "external authenticates with the TLS client certificate; set tls.cert_file and tls.key_file")
		}
	}
}

// addressNameProblem says why an amqp cluster's address name is not a
// name that works as a Kafka topic name.
func addressNameProblem(name string) string {
	if name == "" {
		return "empty"
	}
	for _, c := range name {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '.', c == '_', c == '-':
		default:
			return fmt.Sprintf("character %q not allowed; an address name is also a topic name (letters, digits, '.', '_', '-'), address_prefix holds the rest", c)
		}
	}
	switch {
	case len(name) > 249:
		return fmt.Sprintf("too long (%d characters, at most 249)", len(name))
	case name == "." || name == "..":
		return fmt.Sprintf("%q is not a topic name", name)
	case strings.HasPrefix(name, "__"):
		return "names starting with \"__\" are internal topics, never routed"
	}
	return ""
}

// amqpCluster checks a cluster of kind amqp.
func (v *validator) amqpCluster(cp string, c Cluster) {
	for _, f := range []struct {
		name string
		set  bool
	}{{"bootstrap", len(c.Bootstrap) > 0}, {"tls", c.TLS != nil}, {"sasl", c.SASL != nil}} {
		if f.set {
			v.errorf(cp+"."+f.name, "only for kind \"kafka\"; an amqp cluster's broker settings go under amqp: (url, sasl, tls)")
		}
	}
	a, ap := c.AMQP, cp+".amqp"
	if a == nil {
		v.errorf(ap, `missing; kind "amqp" needs the broker: url (amqp:// or amqps://) and addresses, optionally sasl, tls, address_prefix, key_property, mode, dead_letter`)
		return
	}
	v.amqpBroker(ap, a.URL, a.TLS, a.SASL, "address_prefix and addresses")
	v.addressPrefix(ap, a.AddressPrefix)
	if len(a.Addresses) == 0 {
		v.errorf(ap+".addresses", "at least one address name is required (the broker address is address_prefix + name)")
	}
	seen := make(map[string]int)
	for i, name := range a.Addresses {
		p := fmt.Sprintf("%s.addresses[%d]", ap, i)
		if why := addressNameProblem(name); why != "" {
			v.errorf(p, "invalid address name %q: %s", name, why)
			continue
		}
		if k, dup := seen[name]; dup {
			v.errorf(p, "duplicate address %q (also addresses[%d])", name, k)
			continue
		}
		seen[name] = i
	}
	if a.DeadLetter != "" {
		if why := addressNameProblem(a.DeadLetter); why != "" {
			v.errorf(ap+".dead_letter", "invalid address name %q: %s", a.DeadLetter, why)
		} else if k, ok := seen[a.DeadLetter]; ok {
			v.errorf(ap+".dead_letter", "%q is also addresses[%d]; poison messages must go to an address no route reads or writes", a.DeadLetter, k)
		}
	}
	if !slices.Contains(amqpModes, a.Mode) {
		v.errorf(ap+".mode", "unknown mode %q; use %s", a.Mode, orList(amqpModes))
	}
	switch kp := a.KeyProperty; {
	case strings.ContainsAny(kp, " \t\n"):
		v.errorf(ap+".key_property", "must not contain white space, got %q", kp)
	case kp == "cloudEvents_" || kp == "cloudEvents:":
		v.errorf(ap+".key_property", "%q names no CloudEvents attribute; write e.g. cloudEvents_partitionkey", kp)
	}
	if n := a.MaxMessageBytes; n < 1024 || n > maxAMQPMessageBytes {
		v.errorf(ap+".max_message_bytes", "%v is out of range; max_message_bytes must be between 1KiB and 64MiB", n)
	}
}

// clusterOf returns the cluster a valid "region/cluster" reference names,
// or nil.
func (v *validator) clusterOf(ref string) *Cluster {
	rn, cn, ok := SplitRef(ref)
	if !ok {
		return nil
	}
	ri, ok := v.regionIdx[rn]
	if !ok {
		return nil
	}
	for i := range v.f.Regions[ri].Clusters {
		if c := &v.f.Regions[ri].Clusters[i]; c.Name == cn {
			return c
		}
	}
	return nil
}

// amqpRoute checks what a route from or to an amqp cluster cannot do: its
// include patterns must match one of the source's addresses, and there
// are no consumer groups to sync nor a latest position to start at.
func (v *validator) amqpRoute(rp string, r Route) {
	amqpDest := false
	for _, to := range r.To {
		if c := v.clusterOf(to); c != nil && c.Kind == "amqp" {
			amqpDest = true
		}
	}
	src := v.clusterOf(r.From)
	amqpSrc := src != nil && src.Kind == "amqp" && src.AMQP != nil
	if (amqpSrc || amqpDest) && r.Groups != nil {
		v.errorf(rp+".groups", "an amqp cluster has no consumer groups to sync; remove groups from a route from or to one")
	}
	if !amqpSrc {
		return
	}
	if r.StartAt == "latest" {
		v.errorf(rp+".start_at", "an amqp address has no position to start at; a route from one reads what waits in it (remove start_at)")
	}
	var inc, exc []*regexp.Regexp
	for _, p := range r.Topics.Include {
		re, err := regexp.Compile(p)
		if err != nil {
			return // reported by pattern
		}
		inc = append(inc, re)
	}
	for _, p := range r.Topics.Exclude {
		re, err := regexp.Compile(p)
		if err != nil {
			return
		}
		exc = append(exc, re)
	}
	if len(inc) == 0 {
		return
	}
	for _, name := range src.AMQP.Addresses {
		if slices.ContainsFunc(inc, func(re *regexp.Regexp) bool { return re.MatchString(name) }) &&
			!slices.ContainsFunc(exc, func(re *regexp.Regexp) bool { return re.MatchString(name) }) {
			return
		}
	}
	quoted := make([]string, len(src.AMQP.Addresses))
	for i, a := range src.AMQP.Addresses {
		quoted[i] = strconv.Quote(a)
	}
	v.errorf(rp+".topics.include", "with topics.exclude, matches none of the addresses of amqp cluster %q (it has: %s); an amqp source has no topics besides them",
		r.From, strings.Join(quoted, ", "))
}
