//go:build e2e && benchcompare

package bench

import (
	"os"
	"testing"
	"time"

	"github.com/gpu-metrics-server/gpu-metrics-server/e2e/framework"
)

// hpaSyncPeriod is the HPA controller's resync period: the benchmark runs
// the controller's default, as a cluster does (the functional scenarios
// use 5 s to run faster).
const hpaSyncPeriod = 15 * time.Second

// cluster is the control plane every benchmark of the package runs
// against; TestMain starts it.
var cluster *framework.ControlPlane

func TestMain(m *testing.M) {
	os.Exit(framework.Main(m, framework.Config{HPASyncPeriod: hpaSyncPeriod}, func(cp *framework.ControlPlane) { cluster = cp }))
}
