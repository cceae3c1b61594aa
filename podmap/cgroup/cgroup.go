// Package cgroup finds the Kubernetes pod (and container) a host process
// runs in, from its /proc/<pid>/cgroup file.
//
// The kubelet puts every pod in a cgroup named after the pod's UID and the
// container runtime puts every container in a child cgroup named after the
// container ID. Parse reads both names out of the file for cgroup v1, v2 and
// hybrid hosts, for the systemd and cgroupfs cgroup drivers and for
// containerd, CRI-O and Docker (cri-dockerd) naming. Resolver reads the file
// for a PID under a proc root (the host's /proc) and caches the answer per
// process, keyed by PID and start time so that a reused PID is never
// attributed to the previous owner's pod.
package cgroup

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
)

// Info is where a process runs.
type Info struct {
	// PodUID is the pod's UID in canonical form (lower-case, dashes), or ""
	// for a process outside any pod (a host process).
	PodUID string
	// ContainerID is the container runtime's ID of the container (64
	// lower-case hex digits), or "" when the process sits in the pod's
	// cgroup but in no container's, or in a cgroup the runtime names in a
	// way this package does not know (CRI-O's conmon, for example).
	ContainerID string
}

// maxQuotedLine bounds how much of a malformed line an error quotes.
const maxQuotedLine = 80

// Parse reads the content of a /proc/<pid>/cgroup file. Each line is
// "hierarchy-ID:controller-list:cgroup-path" (cgroup v2 has a single
// "0::/path" line; v1 one line per hierarchy; hybrid hosts both). The first
// line whose path names a pod gives the answer; a well-formed file that
// names no pod gives the zero Info (a host process). Paths relative to the
// reader's cgroup namespace ("/../../kubepods-…") are understood.
func Parse(data []byte) (Info, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return Info{}, errors.New("empty cgroup file")
	}
	var found Info
	matched := false
	for n := 1; len(data) > 0; n++ {
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			data = nil
		}
		if len(line) == 0 {
			continue
		}
		path, err := linePath(line)
		if err != nil {
			return Info{}, fmt.Errorf("line %d %s: %w", n, quote(line), err)
		}
		if matched {
			continue
		}
		if info, ok := parsePath(path); ok {
			found, matched = info, true
		}
	}
	return found, nil
}

// linePath validates one line and returns its path.
func linePath(line []byte) ([]byte, error) {
	first := bytes.IndexByte(line, ':')
	if first <= 0 {
		return nil, errors.New("no hierarchy ID")
	}
	for _, c := range line[:first] {
		if c < '0' || c > '9' {
			return nil, errors.New("hierarchy ID is not a number")
		}
	}
	rest := line[first+1:]
	second := bytes.IndexByte(rest, ':')
	if second < 0 {
		return nil, errors.New("no controller list")
	}
	path := rest[second+1:]
	if len(path) == 0 || path[0] != '/' {
		return nil, errors.New("cgroup path is not absolute")
	}
	return path, nil
}

func quote(line []byte) string {
	if len(line) > maxQuotedLine {
		return strconv.Quote(string(line[:maxQuotedLine])) + "…"
	}
	return strconv.Quote(string(line))
}

// parsePath looks for the pod's cgroup among the path's segments; the
// segment after it, if any, is the container's.
func parsePath(path []byte) (Info, bool) {
	for len(path) > 0 {
		var seg []byte
		if i := bytes.IndexByte(path, '/'); i >= 0 {
			seg, path = path[:i], path[i+1:]
		} else {
			seg, path = path, nil
		}
		uid, ok := podSegment(seg)
		if !ok {
			continue
		}
		next := path
		if i := bytes.IndexByte(next, '/'); i >= 0 {
			next = next[:i]
		}
		return Info{PodUID: uid, ContainerID: containerSegment(next)}, true
	}
	return Info{}, false
}

// podSegment recognises a pod's cgroup:
//
//	systemd driver:  [<prefix>-]kubepods[-<qos>]-pod<uid with _>.slice
//	cgroupfs driver: pod<uid>
//
// (the QoS classes burstable and besteffort, and prefixes such as kind's
// "kubelet-", only change what comes before "pod").
func podSegment(seg []byte) (string, bool) {
	if s, ok := bytes.CutSuffix(seg, []byte(".slice")); ok {
		i := bytes.LastIndex(s, []byte("-pod"))
		if i < 0 || !bytes.Contains(s[:i], []byte("kubepods")) {
			return "", false
		}
		return canonicalUID(s[i+len("-pod"):], '_')
	}
	if s, ok := bytes.CutPrefix(seg, []byte("pod")); ok {
		return canonicalUID(s, '-')
	}
	return "", false
}

// canonicalUID validates a UUID written with sep between its groups
// (8-4-4-4-12 hex digits) and returns it lower-case with dashes.
func canonicalUID(s []byte, sep byte) (string, bool) {
	if len(s) != 36 {
		return "", false
	}
	var out [36]byte
	for i, c := range s {
		switch i {
		case 8, 13, 18, 23:
			if c != sep {
				return "", false
			}
			out[i] = '-'
			continue
		}
		switch {
		case c >= '0' && c <= '9', c >= 'a' && c <= 'f':
			out[i] = c
		case c >= 'A' && c <= 'F':
			out[i] = c + ('a' - 'A')
		default:
			return "", false
		}
	}
	return string(out[:]), true
}

// Runtime prefixes of a container's cgroup under the systemd driver (and
// CRI-O's and Docker's under cgroupfs). containerd under cgroupfs uses the
// bare ID. CRI-O's conmon monitor runs beside the container in
// "crio-conmon-<id>.scope": it is not the container.
var (
	conmonPrefix      = []byte("crio-conmon-")
	containerPrefixes = [][]byte{[]byte("cri-containerd-"), []byte("crio-"), []byte("docker-"), []byte("libpod-")}
)

// containerSegment returns the container ID a cgroup name carries, or "".
func containerSegment(seg []byte) string {
	seg, _ = bytes.CutSuffix(seg, []byte(".scope"))
	if bytes.HasPrefix(seg, conmonPrefix) {
		return ""
	}
	for _, p := range containerPrefixes {
		if rest, ok := bytes.CutPrefix(seg, p); ok {
			seg = rest
			break
		}
	}
	if len(seg) != 64 {
		return ""
	}
	for _, c := range seg {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return ""
		}
	}
	return string(seg)
}

// ParseStartTime returns a process's start time (field 22 of
// /proc/<pid>/stat, in clock ticks since boot). The command name (field 2)
// is in parentheses and may itself contain spaces and parentheses, so the
// fields are counted from the last ')'.
func ParseStartTime(stat []byte) (uint64, error) {
	end := bytes.LastIndexByte(stat, ')')
	if end < 0 || bytes.IndexByte(stat, '(') < 0 {
		return 0, errors.New("stat: no command name in parentheses")
	}
	rest := stat[end+1:]
	// Fields 3 (state) onwards follow the command name; start time is
	// field 22, the 20th of them.
	const want = 22 - 3
	for field := 0; ; field++ {
		rest = bytes.TrimLeft(rest, " \n")
		if len(rest) == 0 {
			return 0, fmt.Errorf("stat: %d fields after the command name, want at least %d", field, want+1)
		}
		tok := rest
		if i := bytes.IndexAny(rest, " \n"); i >= 0 {
			tok, rest = rest[:i], rest[i:]
		} else {
			rest = nil
		}
		if field == want {
			v, err := strconv.ParseUint(string(tok), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("stat: start time %s: %w", quote(tok), err)
			}
			return v, nil
		}
	}
}
