package gateway

import (
	"errors"
	"fmt"
)

// checkAMQPEndpoints refuses the legs of this gateway that read or write
// a cluster of kind amqp which this build cannot serve yet, naming the
// route, so that validate says so instead of run failing later.
func (g *Gateway) checkAMQPEndpoints() []error {
	var problems []error
	seen := map[string]bool{}
	refuse := func(path, route, what, ref string) {
		if seen[route+what] {
			return
		}
		seen[route+what] = true
		problems = append(problems, &SettingError{path, fmt.Errorf("route %s: %s %s is an amqp cluster: %w", route, what, ref, errAMQPEndpointUnsupported)})
	}
	for _, p := range g.table.Out {
		for _, l := range p.Legs {
			if l.From.Kind == "amqp" {
				refuse(l.From.Path+".kind", l.Route.Name, "source", l.From.Ref())
			}
		}
	}
	for _, l := range g.table.In {
		if l.To.Kind == "amqp" {
			refuse(l.To.Path+".kind", l.Route.Name, "destination", l.To.Ref())
		}
	}
	return problems
}

var errAMQPEndpointUnsupported = errors.New("amqp clusters are configured and validated, but this build does not carry them yet")
