//go:build e2e && benchcompare

// Package bench is the side-by-side benchmark (issue 8): the seed's chain
// (Prometheus scraping the agents + prometheus-adapter with the seed's
// rule) against gpu-metrics-server, on the end-to-end harness's real
// control plane (e2e/framework) with the HPA controller at its default
// 15 s sync, and one simulated fleet (hack/fleetsim); and one aggregator
// against fleets of growing size (TestFleetScale). It measures and prints;
// it asserts nothing about speed.
//
// fleetsim_test.go drives hack/fleetsim, pipelines_test.go starts the two
// pipelines, workload_test.go creates the measured Deployments and HPAs,
// measure_test.go holds the meters (process footprint, query latency,
// freshness poller); compare_test.go and fleet_test.go are the two
// benchmarks.
//
// Run it with hack/bench-compare.sh (make bench-compare); see
// docs/benchmarks.md.
package bench
