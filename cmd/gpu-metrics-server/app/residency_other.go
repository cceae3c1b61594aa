//go:build !linux

package app

import "context"

// releaseStartupPages does nothing off Linux.
func releaseStartupPages(context.Context) {}
