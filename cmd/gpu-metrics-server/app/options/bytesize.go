package options

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ByteSize is a pflag value for sizes such as 4MiB, 512KiB, 4Mi, 1MB or
// 1048576.
type ByteSize int64

var byteUnits = []struct {
	suffix string
	factor int64
}{
	// Longest suffixes first, so that "MiB" is not read as "B".
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30},
	{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30},
	{"kB", 1000}, {"KB", 1000}, {"MB", 1000 * 1000}, {"GB", 1000 * 1000 * 1000},
	{"B", 1},
}

func (b *ByteSize) String() string {
	v := int64(*b)
	switch {
	case v != 0 && v%(1<<20) == 0:
		return strconv.FormatInt(v>>20, 10) + "MiB"
	case v != 0 && v%(1<<10) == 0:
		return strconv.FormatInt(v>>10, 10) + "KiB"
	}
	return strconv.FormatInt(v, 10)
}

// Set parses a size with an optional unit suffix.
func (b *ByteSize) Set(s string) error {
	num, factor := strings.TrimSpace(s), int64(1)
	for _, u := range byteUnits {
		if strings.HasSuffix(num, u.suffix) {
			num, factor = strings.TrimSpace(strings.TrimSuffix(num, u.suffix)), u.factor
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil {
		return fmt.Errorf("%q is not a size such as 4MiB", s)
	}
	if n < 0 || n > (1<<62)/factor {
		return errors.New("size out of range")
	}
	*b = ByteSize(n * factor)
	return nil
}

// Type names the value in help.
func (b *ByteSize) Type() string { return "size" }
