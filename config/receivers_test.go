package config

import (
	"fmt"
	"strings"
	"testing"
)

func TestSplitReceiverWarnings(t *testing.T) {
	region := func(name string, gws ...string) Region {
		r := Region{Name: name}
		for _, g := range gws {
			r.Gateways = append(r.Gateways, Gateway{Name: g})
		}
		return r
	}
	regions := []Region{region("east", "east-a", "east-b"), region("west", "west-a", "west-b")}
	route := Route{Name: "orders", From: "east/kafka", To: []string{"west/kafka"}}
	for _, tc := range []struct {
		name  string
		links []Link
		want  string // "" = no warning
	}{
		{"one link", []Link{{Name: "l", Between: []string{"east", "west"}}}, ""},
		{"both pinned to west-b", []Link{{Name: "l", Between: []string{"east/east-a", "west/west-b"}}, {Name: "backup", Between: []string{"east/east-b", "west/west-b"}}}, ""},
		{"backup to another receiver", []Link{{Name: "l", Between: []string{"east", "west"}}, {Name: "backup", Between: []string{"east/east-b", "west/west-b"}}},
			"west/kafka is received by 2 gateways at once: west-a (from east-a over l); west-b (from east-b over backup)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			splitReceiverWarnings(&File{Regions: regions, Links: tc.links, Routes: []Route{route}}, func(path, format string, args ...any) {
				got = append(got, path+": "+fmt.Sprintf(format, args...))
			})
			switch {
			case tc.want == "" && len(got) > 0:
				t.Errorf("warnings %q, want none", got)
			case tc.want != "" && (len(got) != 1 || !strings.Contains(got[0], "routes[0].to[0]: "+tc.want)):
				t.Errorf("warnings %q, want one containing %q", got, tc.want)
			}
		})
	}
}
