//go:build e2e

package e2e

import (
	"os"
	"testing"
	"time"

	"github.com/gpu-metrics-server/gpu-metrics-server/e2e/framework"
)

// hpaSyncPeriod is the HPA controller's resync period in the scenarios:
// shorter than the controller's default 15 s so that they run faster.
const hpaSyncPeriod = 5 * time.Second

// cluster is the control plane every test of the package runs against;
// TestMain starts it.
var cluster *framework.ControlPlane

func TestMain(m *testing.M) {
	os.Exit(framework.Main(m, framework.Config{HPASyncPeriod: hpaSyncPeriod, Kubelets: true}, func(cp *framework.ControlPlane) { cluster = cp }))
}
