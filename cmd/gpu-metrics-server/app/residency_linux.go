package app

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
)

// releaseTimes are when, after the agent starts serving, it hands the
// executable's pages back (see releaseExecutablePages): once start-up is
// over, then twice more for the pages another thread mapped again while a
// pass ran.
var releaseTimes = []time.Duration{5 * time.Second, 30 * time.Second, 2 * time.Minute}

// releaseStartupPages runs releaseExecutablePages at releaseTimes until ctx
// ends, logging what each pass did.
func releaseStartupPages(ctx context.Context) {
	start := time.Now()
	for _, at := range releaseTimes {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(start.Add(at))):
		}
		before := residentKiB()
		if err := releaseExecutablePages(); err != nil {
			klog.V(2).InfoS("Could not release the executable's start-up pages", "err", err)
			return
		}
		klog.V(2).InfoS("Released the executable's start-up pages", "rssKiBBefore", before, "rssKiBAfter", residentKiB())
	}
}

// releaseExecutablePages takes the executable's clean read-only pages
// (code, read-only data, function tables) out of the process and out of
// the page cache, so that only those the agent uses again come back, one
// 4 KiB page at a time:
//
// One binary carries the aggregator's Kubernetes API server libraries;
// their package initialisation runs in the agent too and touches pages
// across the whole binary, which the kernel keeps mapped. The page cache
// holds an executable in large folios (up to 2 MiB), each mapped whole on
// a fault, so a few touched bytes keep megabytes resident. Here each
// releasable mapping (see releasable) is marked random access (a fault
// reads one page, no read-ahead or large folio) and not for huge pages,
// and dropped (MADV_DONTNEED: clean file pages, refaulted from the file
// as needed); then the executable's cached pages that no process maps any
// more are evicted (POSIX_FADV_DONTNEED), so that the agent's faults read
// them again at 4 KiB. Pages another thread maps again during a pass stay
// as they were until the next pass.
func releaseExecutablePages() error {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return err
	}
	smaps, err := os.Open("/proc/self/smaps")
	if err != nil {
		return err
	}
	ranges, err := releasable(smaps, exe)
	_ = smaps.Close()
	if err != nil {
		return err
	}
	for _, r := range ranges {
		for _, advice := range []int{unix.MADV_RANDOM, unix.MADV_NOHUGEPAGE, unix.MADV_DONTNEED} {
			if err := madvise(r.start, r.end-r.start, advice); err != nil {
				return fmt.Errorf("madvise %#x-%#x: %w", r.start, r.end, err)
			}
		}
	}
	// The mapped file itself, even if replaced on disk since.
	file, err := os.Open("/proc/self/exe")
	if err != nil {
		return err
	}
	defer func() { _ = file.Close() }()
	return unix.Fadvise(int(file.Fd()), 0, 0, unix.FADV_DONTNEED)
}

// memRange is one mapping's addresses, [start, end).
type memRange struct{ start, end uintptr }

// releasable reads /proc/<pid>/smaps and returns the mappings of the file
// exe that can be dropped and read again from it unchanged: mapped
// without write permission and holding no anonymous (copy-on-write) page.
// The second excludes the page the dynamic loader relocated and then made
// read-only (RELRO: the GOT), whose dropped copy would come back from the
// file unrelocated.
func releasable(smaps io.Reader, exe string) ([]memRange, error) {
	var (
		out []memRange
		cur *memRange // the mapping being read, if a candidate
	)
	sc := bufio.NewScanner(smaps)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		if lo, hi, isRange := strings.Cut(f[0], "-"); isRange && !strings.HasSuffix(f[0], ":") {
			// A mapping: start-end perms offset dev inode [path].
			if cur != nil {
				out = append(out, *cur)
			}
			cur = nil
			start, err1 := strconv.ParseUint(lo, 16, 64)
			end, err2 := strconv.ParseUint(hi, 16, 64)
			if err1 != nil || err2 != nil || end <= start || len(f) < 5 {
				return nil, fmt.Errorf("smaps: bad mapping line %q", sc.Text())
			}
			if len(f) >= 6 && strings.Join(f[5:], " ") == exe && !strings.Contains(f[1], "w") {
				cur = &memRange{uintptr(start), uintptr(end)}
			}
			continue
		}
		if f[0] == "Anonymous:" && cur != nil {
			if len(f) < 2 || f[1] != "0" {
				cur = nil // relocated or otherwise written: keep it
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if cur != nil {
		out = append(out, *cur)
	}
	return out, nil
}

func madvise(addr, length uintptr, advice int) error {
	if _, _, e := unix.Syscall(unix.SYS_MADVISE, addr, length, uintptr(advice)); e != 0 {
		return e
	}
	return nil
}

// residentKiB returns the process's VmRSS, or -1.
func residentKiB() int64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err == nil {
				return n
			}
		}
	}
	return -1
}
