//go:build e2e

package framework

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
)

// Ports for the suite's listeners come from below the kernel's ephemeral
// range. A port taken from the ephemeral range (net.Listen on port 0) and
// closed again for a process to bind later can meanwhile become the local
// port of any outgoing connection on the machine, and the process then
// fails with "address already in use" (a kubelet did, once). Outgoing
// connections never take a port outside that range, and a port is never
// handed out twice in one run, so only a listener of another program can
// still collide.
const lowestPort = 10000

var ports struct {
	sync.Mutex
	lo, hi int // the range handed out from: [lo, hi)
	next   int
	inited bool
}

// ephemeralLow is the lowest port of the kernel's ephemeral range (Linux:
// /proc/sys/net/ipv4/ip_local_port_range), or 32768 where it can't be read.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 32768
	}
	lo, err := strconv.Atoi(f[0])
	if err != nil || lo <= lowestPort {
		return 32768
	}
	return lo
}

// FreePorts returns n distinct loopback TCP ports, free when chosen, from
// below the ephemeral range and not handed out before in this run.
func FreePorts(n int) ([]int, error) {
	ports.Lock()
	defer ports.Unlock()
	if !ports.inited {
		ports.lo, ports.hi = lowestPort, ephemeralLow()
		// Start somewhere in the range, so that two suites on one machine
		// (engineers' runs side by side) rarely meet.
		ports.next = ports.lo + rand.IntN(ports.hi-ports.lo)
		ports.inited = true
	}
	out := make([]int, 0, n)
	for tried := 0; len(out) < n; tried++ {
		if tried == ports.hi-ports.lo {
			return nil, fmt.Errorf("no free loopback port in [%d, %d) (%d found of %d)", ports.lo, ports.hi, len(out), n)
		}
		p := ports.next
		ports.next++
		if ports.next == ports.hi {
			ports.next = ports.lo
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue // in use by someone else
		}
		_ = l.Close()
		out = append(out, p)
	}
	return out, nil
}
