//go:build linux

package netlab_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/meridian-gw/meridian/chaos"
	"github.com/meridian-gw/meridian/chaos/netlab"
	"github.com/meridian-gw/meridian/chaos/netlab/netlabtest"
)

func wan(t *testing.T) *chaos.Profile {
	t.Helper()
	p, err := chaos.LoadProfile("wan")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestAddressPlan(t *testing.T) {
	lab := netlabtest.New(t, netlab.Options{Regions: []string{"edge", "hq", "dr"}})
	for i, r := range []string{"edge", "hq", "dr"} {
		want := netip.AddrFrom4([4]byte{198, 18, byte(i + 1), 1})
		if got := lab.Addr(r); got != want {
			t.Errorf("Addr(%s) = %v, want %v", r, got, want)
		}
		if !netlab.Prefix.Contains(lab.Addr(r)) {
			t.Errorf("Addr(%s) = %v outside %v", r, lab.Addr(r), netlab.Prefix)
		}
	}
	if got := lab.Addr("nowhere"); got.IsValid() {
		t.Errorf("Addr(nowhere) = %v, want the zero Addr", got)
	}
	var names []string
	for _, lk := range lab.Links() {
		names = append(names, lk.Name())
	}
	if got, want := strings.Join(names, " "), "edge--hq edge--dr hq--dr"; got != want {
		t.Errorf("links %q, want %q", got, want)
	}
	if lab.Link("hq", "edge") != lab.Link("edge", "hq") || lab.Link("edge", "edge") != nil || lab.Link("edge", "x") != nil {
		t.Error("Link lookup by either order, or nil for no link, is broken")
	}
}

func TestOptionsRejected(t *testing.T) {
	tests := []struct {
		name string
		opts netlab.Options
		want string
	}{
		{"one region", netlab.Options{Regions: []string{"edge"}}, "want 2 to"},
		{"bad name", netlab.Options{Regions: []string{"edge", "HQ"}}, `"HQ" is not a region name`},
		{"twice", netlab.Options{Regions: []string{"edge", "edge"}}, "named twice"},
		{"unknown link", netlab.Options{Regions: []string{"edge", "hq"}, Links: map[string]*chaos.Profile{"hq--edge": nil}}, `no link "hq--edge"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lab, err := netlab.New(tt.opts)
			if err == nil {
				lab.Close()
				t.Fatalf("New succeeded, want an error containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New: %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestTCPAcrossLab(t *testing.T) {
	lab := netlabtest.New(t, netlab.Options{Regions: []string{"edge", "hq"}, Profile: wan(t)})
	ln, err := lab.Listen("hq", "tcp", lab.Addr("hq").String()+":9092")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		_, err = io.Copy(c, c) // echo
		done <- err
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	c, err := lab.DialContext("edge")(ctx, "tcp", "198.18.2.1:9092")
	if err != nil {
		t.Fatal(err)
	}
	rtt := time.Since(start)
	if rtt < 79*time.Millisecond {
		t.Errorf("TCP handshake took %v, want at least the profile's RTT (80ms)", rtt)
	}
	if got, want := c.LocalAddr().(*net.TCPAddr).AddrPort().Addr(), lab.Addr("edge"); got != want {
		t.Errorf("dialed from %v, want %v", got, want)
	}
	msg := bytes.Repeat([]byte("meridian "), 50_000) // 450 kB: several windows
	go func() { _, _ = c.Write(msg) }()
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, msg) {
		t.Error("echo differs")
	}
	c.Close()
	if err := <-done; err != nil {
		t.Error(err)
	}
	st := lab.Link("edge", "hq").Stats()
	if st.Up.Packets == 0 || st.Down.Packets == 0 {
		t.Errorf("link stats show no traffic: %+v", st)
	}
	t.Logf("TCP echo of %d bytes over wan: handshake %v; stats %+v", len(msg), rtt, st)
}

func TestUDPAcrossLab(t *testing.T) {
	lab := netlabtest.New(t, netlab.Options{Regions: []string{"edge", "hq"}, Profile: wan(t).WithLoss(0)})
	srv, err := lab.ListenPacket("hq", "udp", "198.18.2.1:5353")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	cl, err := lab.ListenPacket("edge", "udp", "198.18.1.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := srv.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = srv.WriteTo(append([]byte("re: "), buf[:n]...), from)
		}
	}()
	dst := &net.UDPAddr{IP: net.IPv4(198, 18, 2, 1), Port: 5353}
	buf := make([]byte, 2048)
	for i := range 5 {
		msg := fmt.Sprintf("ping %d", i)
		start := time.Now()
		if _, err := cl.WriteTo([]byte(msg), dst); err != nil {
			t.Fatal(err)
		}
		_ = cl.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, from, err := cl.ReadFrom(buf)
		if err != nil {
			t.Fatal(err)
		}
		rtt := time.Since(start)
		if got := string(buf[:n]); got != "re: "+msg {
			t.Errorf("got %q, want %q", got, "re: "+msg)
		}
		if from.String() != dst.String() {
			t.Errorf("reply from %v, want %v", from, dst)
		}
		if rtt < 78*time.Millisecond || rtt > 150*time.Millisecond {
			t.Errorf("UDP round trip %v, want about 80ms", rtt)
		}
	}
}

func TestDialOutsideLabRefused(t *testing.T) {
	lab := netlabtest.New(t, netlab.Options{Regions: []string{"edge", "hq"}})
	dial := lab.DialContext("edge")
	for _, addr := range []string{"10.0.0.1:80", "example.com:80", "192.168.1.1:9092", "[2001:db8::1]:80"} {
		if _, err := dial(context.Background(), "tcp", addr); !errors.Is(err, netlab.ErrOutsideLab) {
			t.Errorf("dial %s: %v, want ErrOutsideLab", addr, err)
		}
	}
	if _, err := lab.Listen("edge", "tcp", "10.1.2.3:0"); !errors.Is(err, netlab.ErrOutsideLab) {
		t.Errorf("listen on 10.1.2.3: %v, want ErrOutsideLab", err)
	}
	if _, err := lab.Listen("nowhere", "tcp", ":0"); !errors.Is(err, netlab.ErrUnknownRegion) {
		t.Errorf("listen in an unknown region: %v, want ErrUnknownRegion", err)
	}
}

func TestBlackoutStopsAndResumes(t *testing.T) {
	lab := netlabtest.New(t, netlab.Options{Regions: []string{"edge", "hq"}, Profile: wan(t).WithLoss(0).WithRTT(20 * time.Millisecond)})
	lk := lab.Link("edge", "hq")
	srv, err := lab.ListenPacket("hq", "udp", "198.18.2.1:7000")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	cl, err := lab.ListenPacket("edge", "udp", "198.18.1.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	dst := &net.UDPAddr{IP: net.IPv4(198, 18, 2, 1), Port: 7000}

	// exchange sends n datagrams 2ms apart and reports how many arrive.
	exchange := func(n int) int {
		for i := range n {
			if _, err := cl.WriteTo([]byte{byte(i)}, dst); err != nil {
				t.Fatal(err)
			}
			time.Sleep(2 * time.Millisecond)
		}
		got := 0
		buf := make([]byte, 64)
		for {
			_ = srv.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			if _, _, err := srv.ReadFrom(buf); err != nil {
				return got
			}
			got++
		}
	}
	if got := exchange(20); got != 20 {
		t.Fatalf("before the blackout %d of 20 arrived", got)
	}
	lk.SetBlackout(true)
	if got := exchange(20); got != 0 {
		t.Errorf("during the blackout %d of 20 arrived, want 0", got)
	}
	lk.SetBlackout(false)
	if got := exchange(20); got != 20 {
		t.Errorf("after the blackout %d of 20 arrived, want 20", got)
	}
	lk.Blackout(300 * time.Millisecond)
	if got := exchange(20); got != 0 {
		t.Errorf("during Blackout(300ms) %d of 20 arrived, want 0", got)
	}
	time.Sleep(300 * time.Millisecond)
	if got := exchange(20); got != 20 {
		t.Errorf("after Blackout(300ms) %d of 20 arrived, want 20", got)
	}
	if st := lk.Stats(); st.Up.Dropped.Blackout != 40 {
		t.Errorf("blackout drops up = %d, want 40: %+v", st.Up.Dropped.Blackout, st)
	}
}

func TestSetProfileLive(t *testing.T) {
	lab := netlabtest.New(t, netlab.Options{Regions: []string{"edge", "hq"}})
	lk := lab.Link("edge", "hq")
	rtt := func() time.Duration {
		t.Helper()
		ln, err := lab.Listen("hq", "tcp", "198.18.2.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			if c, err := ln.Accept(); err == nil {
				c.Close()
			}
		}()
		start := time.Now()
		c, err := lab.DialContext("edge")(context.Background(), "tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		return time.Since(start)
	}
	if d := rtt(); d > 20*time.Millisecond {
		t.Errorf("perfect link: handshake %v, want well under 20ms", d)
	}
	p := wan(t).WithRTT(60 * time.Millisecond).WithLoss(0)
	p.Up.MTU, p.Down.MTU = 1280, 1400
	if err := lk.SetProfile(p); err != nil {
		t.Fatal(err)
	}
	if d := rtt(); d < 59*time.Millisecond || d > 120*time.Millisecond {
		t.Errorf("after SetProfile(60ms RTT): handshake %v, want about 60ms", d)
	}
	if got := lk.Profile(); got.RTT() != 60*time.Millisecond {
		t.Errorf("Profile().RTT() = %v, want 60ms", got.RTT())
	}
	// The path MTU of the routes follows the profile, per direction.
	if netlab.CheckCommand() != nil {
		return
	}
	for _, tt := range []struct{ from, to, want string }{{"edge", "198.18.2.1", "mtu 1280"}, {"hq", "198.18.1.1", "mtu 1400"}} {
		out, err := lab.Command(tt.from, "ip", "-4", "route", "get", tt.to).CombinedOutput()
		if err != nil || !strings.Contains(string(out), tt.want) {
			t.Errorf("route from %s to %s after SetProfile: %v\n%s\nwant %s", tt.from, tt.to, err, out, tt.want)
		}
	}
}

func TestCommandAndNamedNamespaces(t *testing.T) {
	netlabtest.Require(t)
	if err := netlab.CheckCommand(); err != nil {
		t.Skip(err)
	}
	prefix := fmt.Sprintf("mtest%d-", os.Getpid()%100000)
	lab := netlabtest.New(t, netlab.Options{Regions: []string{"edge", "hq"}, Named: true, NamePrefix: prefix})
	out, err := lab.Command("edge", "ip", "-4", "-o", "addr", "show").CombinedOutput()
	if err != nil {
		t.Fatalf("ip addr in edge: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "198.18.1.1/24") || strings.Contains(string(out), "198.18.2.1") {
		t.Errorf("ip addr in edge:\n%s\nwant 198.18.1.1/24 only", out)
	}
	name := lab.NamedNamespace("hq")
	if name != prefix+"hq" {
		t.Fatalf("NamedNamespace(hq) = %q, want %q", name, prefix+"hq")
	}
	if _, err := os.Stat(filepath.Join("/run/netns", name)); err != nil {
		t.Errorf("named namespace: %v", err)
	}
	if out, err := exec.Command("ip", "netns", "exec", name, "ip", "-4", "-o", "addr", "show").CombinedOutput(); err != nil || !strings.Contains(string(out), "198.18.2.1/24") {
		t.Errorf("ip netns exec %s ip addr: %v\n%s", name, err, out)
	}
	if err := lab.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join("/run/netns", name)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after Close, /run/netns/%s: %v, want it gone", name, err)
	}
}

// TestCloseLeavesNothing checks that Close ends every goroutine and that no
// namespace, interface or descriptor of the lab survives it.
func TestCloseLeavesNothing(t *testing.T) {
	netlabtest.Require(t)
	before := runtime.NumGoroutine()
	ifacesBefore := interfaceNames(t)
	lab, err := netlab.New(netlab.Options{Regions: []string{"edge", "hq", "dr"}, Profile: wan(t)})
	if err != nil {
		t.Fatal(err)
	}
	// Traffic in flight at Close.
	pc, err := lab.ListenPacket("edge", "udp", "198.18.1.1:0")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		_, _ = pc.WriteTo([]byte{byte(i)}, &net.UDPAddr{IP: net.IPv4(198, 18, 3, 1), Port: 9})
	}
	pc.Close()
	inodes := map[uint64]bool{}
	for _, r := range lab.Regions() {
		var st unix.Stat_t
		if err := unix.Stat(lab.NamespacePath(r), &st); err != nil {
			t.Fatal(err)
		}
		inodes[st.Ino] = true
	}
	if len(inodes) != 3 {
		t.Fatalf("namespaces %v, want 3 distinct", inodes)
	}
	if err := lab.Close(); err != nil {
		t.Fatal(err)
	}
	if err := lab.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}

	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines after Close, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
	}
	// No descriptor or thread of this process refers to a lab namespace.
	for _, glob := range []string{"/proc/self/fd/*", "/proc/self/task/*/ns/net"} {
		paths, _ := filepath.Glob(glob)
		for _, p := range paths {
			var st unix.Stat_t
			if unix.Stat(p, &st) == nil && inodes[st.Ino] {
				if target, _ := os.Readlink(p); strings.HasPrefix(target, "net:") {
					t.Errorf("%s still refers to a lab namespace (%s)", p, target)
				}
			}
		}
	}
	if got := interfaceNames(t); got != ifacesBefore {
		t.Errorf("host interfaces changed: %s, before %s", got, ifacesBefore)
	}
	if err := lab.Do("edge", func() error { return nil }); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Do after Close: %v, want net.ErrClosed", err)
	}
}

func interfaceNames(t *testing.T) string {
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, i := range ifs {
		names = append(names, i.Name)
	}
	return strings.Join(names, ",")
}
