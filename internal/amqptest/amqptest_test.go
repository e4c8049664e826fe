package amqptest

import (
	"context"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	amqp "github.com/Azure/go-amqp"
)

// TestBroker starts a node, sends and receives one message on a queue
// address over AMQP 1.0, restarts the node and does it again.
func TestBroker(t *testing.T) {
	b := Start(t)
	// The PID started is the node itself (not a shell around it), so
	// Stop, Kill and Pdeathsig reach it.
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", b.PID()))
	if err != nil || !strings.Contains(string(cmdline), "beam") {
		t.Fatalf("pid %d runs %q (%v), want the Erlang VM (beam.smp)", b.PID(), cmdline, err)
	}
	roundTrip(t, b, "one")
	pid := b.PID()
	b.Kill()
	if err := syscall.Kill(pid, 0); err == nil {
		t.Fatalf("node %d still alive after Kill", pid)
	}
	b.Start()
	b.Stop()
	if err := probe(b.Addr()); err == nil {
		t.Fatal("stopped broker still accepts connections")
	}
	b.Start()
	roundTrip(t, b, "two")
}

func roundTrip(t *testing.T, b *Broker, body string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := amqp.Dial(ctx, b.URL(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := c.NewSession(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	snd, err := s.NewSender(ctx, "/queue/amqptest", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := snd.Send(ctx, amqp.NewMessage([]byte(body)), nil); err != nil {
		t.Fatal(err)
	}
	rs, err := c.NewSession(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	r, err := rs.NewReceiver(ctx, "/queue/amqptest", &amqp.ReceiverOptions{Credit: 10})
	if err != nil {
		t.Fatal(err)
	}
	m, err := r.Receive(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(m.GetData()); got != body {
		t.Fatalf("received %q, want %q", got, body)
	}
	if err := r.AcceptMessage(ctx, m); err != nil {
		t.Fatal(err)
	}
}
