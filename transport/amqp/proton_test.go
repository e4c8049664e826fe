package amqp_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/internal/amqptest"
	"github.com/meridian-gw/meridian/transport"
	"github.com/meridian-gw/meridian/transport/amqp"
)

// debianPython is Debian's interpreter, which has python3-qpid-proton
// (python3 on PATH may be another one).
const debianPython = "/usr/bin/python3"

// TestAMQPBindingWithProton: an independent implementation of the
// receiving end, in Python with Qpid Proton (testdata/proton_receiver.py),
// reads a Meridian dialer's Hello from the broker, answers a Welcome it
// encodes itself, and reads the next frame: the binding of PROTOCOL.md
// section 10 (one frame per message in one data section, the
// meridian-session property, the subject) works with a client other than
// go-amqp, in both directions.
func TestAMQPBindingWithProton(t *testing.T) {
	if err := exec.Command(debianPython, "-c", "import proton").Run(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("python3-qpid-proton is required under CI=true: %s -c 'import proton': %v", debianPython, err)
		}
		t.Skipf("python3-qpid-proton not installed (%s -c 'import proton': %v); apt-get install -y python3-qpid-proton", debianPython, err)
	}
	b := amqptest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	addrs := amqp.AddressesFor(amqp.DefaultAddressPrefix, "proton", "v7-a", "hq-a")
	var out, errOut bytes.Buffer
	py := exec.CommandContext(ctx, debianPython, "testdata/proton_receiver.py", b.URL(), addrs.Data, addrs.Control)
	py.Stdout, py.Stderr = &out, &errOut
	must(t, py.Start())
	d, err := amqp.NewDialer(amqp.DialerOptions{Broker: amqp.Broker{URL: b.URL()}, Addresses: addrs})
	must(t, err)
	c, err := d.Dial(ctx, "", hello())
	if err != nil {
		py.Process.Kill()
		py.Wait()
		t.Fatalf("dial the proton receiver: %v\n%s", err, errOut.String())
	}
	if w := c.Welcome(); w.Gateway != "hq-a" || w.Region != "hq" || w.Version != 3 || w.Window != 1<<20 || w.MaxBatchBytes != 1<<20 {
		t.Errorf("welcome from proton = %+v", w)
	}
	must(t, c.Send(ctx, &transport.Topic{Leg: "leg1", Name: "t", Partitions: 3}))
	if err := py.Wait(); err != nil {
		t.Fatalf("proton receiver: %v\n%s", err, errOut.String())
	}
	c.Close(nil)
	var got struct {
		Hello, Next struct {
			Session     string
			Subject     string
			DataSection bool `json:"data_section"`
			Type        int
			Size        int
		}
	}
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatalf("proton receiver output %q: %v", out.String(), err)
	}
	t.Logf("proton saw %+v", got)
	id := c.(*amqp.Conn).ID()
	if h := got.Hello; h.Session != id || h.Subject != "hello" || !h.DataSection || h.Type != int(transport.FrameHello) {
		t.Errorf("hello as proton read it: %+v, want session %s, subject hello, a data section of type 1", h, id)
	}
	if n := got.Next; n.Session != id || n.Subject != "topic" || !n.DataSection || n.Type != int(transport.FrameTopic) {
		t.Errorf("next message as proton read it: %+v, want session %s, subject topic, type 7", n, id)
	}
}
