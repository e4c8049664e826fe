package config

import (
	"fmt"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"
)

var envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// expandEnv replaces ${NAME} in every string scalar value of the tree
// rooted at n, in place, so that decode errors keep their positions.
// Mapping keys and non-string scalars (numbers, booleans) are left alone.
// Problems are kept in d.envErrs and reported when the decoder reaches the
// node, so they carry the node's path (and cost nothing under unknown keys,
// which are errors anyway). Every value expanded is kept in d.secrets:
// such values are never printed (see File.Secrets).
func (d *decoder) expandEnv(n *yaml.Node, lookup func(string) (string, bool)) {
	if n == nil {
		return
	}
	d.nodes++
	switch n.Kind {
	case yaml.DocumentNode, yaml.SequenceNode:
		for _, c := range n.Content {
			d.expandEnv(c, lookup)
		}
	case yaml.MappingNode:
		for i := 1; i < len(n.Content); i += 2 {
			d.expandEnv(n.Content[i], lookup)
		}
	case yaml.ScalarNode:
		if n.ShortTag() != "!!str" || !strings.Contains(n.Value, "${") {
			return
		}
		out, errs := expand(n.Value, func(name string) (string, bool) {
			v, ok := lookup(name)
			if !ok && d.envOptional {
				// Validation without the secrets (a CI linting topology
				// files): the value stands for itself, and a warning says so.
				d.unsetEnv[n] = append(d.unsetEnv[n], name)
				v, ok = "${"+name+"}", true
			}
			if ok && v != "" {
				d.secrets = append(d.secrets, v)
			}
			return v, ok
		})
		if len(errs) > 0 {
			d.envErrs[n] = errs
			return
		}
		n.Value = out
		d.expanded[n] = true
	}
}

// expand replaces ${NAME} in s with the variable's value; "$${" is a
// literal "${". Any other "$" is kept as is, so regular expressions such as
// `\.tmp$` need no escaping. It returns one reason per problem.
func expand(s string, lookup func(string) (string, bool)) (string, []string) {
	var b strings.Builder
	var errs []string
	for i := 0; i < len(s); {
		switch {
		case strings.HasPrefix(s[i:], "$${"):
			b.WriteString("${")
			i += 3
		case strings.HasPrefix(s[i:], "${"):
			end := strings.IndexByte(s[i+2:], '}')
			if end < 0 {
				errs = append(errs, `unclosed "${" (write "$${" for a literal "${")`)
				return "", errs
			}
			name := s[i+2 : i+2+end]
			i += 2 + end + 1
			if !envNameRE.MatchString(name) {
				errs = append(errs, fmt.Sprintf("invalid environment variable name %q in \"${%s}\" (use letters, digits and _; write \"$${\" for a literal \"${\")", name, name))
				continue
			}
			val, ok := lookup(name)
			if !ok {
				errs = append(errs, fmt.Sprintf("environment variable %s is not set", name))
				continue
			}
			b.WriteString(val)
		default:
			b.WriteByte(s[i])
			i++
		}
	}
	return b.String(), errs
}
