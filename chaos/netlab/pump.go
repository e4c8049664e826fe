//go:build linux

package netlab

import (
	"errors"
	"os"
	"time"
)

// readBufSize holds the largest IP packet a TUN device can hand over.
const readBufSize = 64 << 10

// readLoop is the pump's reader for one region: it reads IP packets from
// the region's TUN device into one reused buffer and forwards each to the
// pipe of the link direction towards its destination region. The pipe
// either writes it into the destination's TUN device at once or schedules a
// pooled copy, so the reader never allocates per packet. It returns when
// the device is closed.
func (l *Lab) readLoop(r *region) {
	buf := make([]byte, readBufSize)
	var errs int
	for {
		n, err := r.tun.Read(buf)
		if err != nil {
			if errors.Is(err, os.ErrClosed) {
				return
			}
			r.readErrs.Add(1)
			if !l.backoff(&errs, r, err) {
				return
			}
			continue
		}
		errs = 0
		r.read.Add(1)
		pkt := buf[:n]
		dst, ok := l.destination(pkt)
		if !ok || dst == r.idx {
			r.unroutable.Add(1)
			continue
		}
		r.out[dst].Forward(l.regions[dst], pkt, n)
	}
}

// destination is the index of the region an IP packet is addressed to:
// IPv4 to 198.18.<i+1>.x goes to region i.
func (l *Lab) destination(pkt []byte) (int, bool) {
	if len(pkt) < 20 || pkt[0]>>4 != 4 {
		return 0, false
	}
	if pkt[16] != 198 || pkt[17] != 18 {
		return 0, false
	}
	i := int(pkt[18]) - 1
	return i, i >= 0 && i < len(l.regions)
}

// backoff logs a read error (the first at warn, the rest at debug) and
// pauses a little after repeated ones. It reports false if the lab is
// closing.
func (l *Lab) backoff(errs *int, r *region, err error) bool {
	*errs++
	if *errs == 1 {
		l.log.Warn("lab tun read", "region", r.name, "err", err)
	} else {
		l.log.Debug("lab tun read", "region", r.name, "err", err, "consecutive", *errs)
	}
	if *errs < 3 {
		return true
	}
	t := time.NewTimer(time.Duration(min(*errs, 100)) * time.Millisecond)
	defer t.Stop()
	select {
	case <-l.quit:
		return false
	case <-t.C:
		return true
	}
}
