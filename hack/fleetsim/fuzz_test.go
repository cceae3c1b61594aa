package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// FuzzControl drives the control API with arbitrary requests: it answers
// each with a status from the documented set and never panics, and a
// rejected request changes nothing.
func FuzzControl(f *testing.F) {
	for _, s := range []struct{ method, target, body string }{
		{"POST", "/sim/set?node=0&gpu=1&utilization=90", ""},
		{"POST", "/sim/set?node=all&gpu=all&utilization=1e309", ""},
		{"POST", "/sim/set?node=1&gpu=-1&utilization=5", ""},
		{"PUT", "/nodes/0/pods", `{"podResources":[{"name":"a","namespace":"b","containers":[{"name":"c","devices":[{"resourceName":"nvidia.com/gpu","deviceIds":["GPU-0"]}]}]}]}`},
		{"PUT", "/nodes/1/pods", `{"podResources":[{"name":"","containers":[{"devices":[{"resourceName":"nvidia.com/gpu","deviceIds":["nvidia1::3"]}]}]}]}`},
		{"PUT", "/nodes/00/pods", `[`},
		{"GET", "/nodes/1/metrics", ""},
		{"GET", "/targets", ""},
	} {
		f.Add(s.method, s.target, s.body)
	}
	fl := mustFleet(f, testConfig(2, 2, "fill"))
	var l listing
	l.publish(targetList{})
	h := controlHandler(fl, &l)
	f.Fuzz(func(t *testing.T, method, target, body string) {
		if !strings.HasPrefix(target, "/") || strings.ContainsAny(target, " \r\n\t#") || strings.ContainsAny(method, " \r\n\t") || method == "" {
			t.Skip("not a request line httptest can build")
		}
		req, err := http.NewRequest(method, "http://fleet"+target, strings.NewReader(body))
		if err != nil {
			t.Skip(err)
		}
		before := string(fl.nodes[0].sampler.SampleOnce(time.Unix(1, 0)).Exposition())
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		switch rec.Code {
		case http.StatusOK, http.StatusNoContent, http.StatusMovedPermanently, http.StatusTemporaryRedirect,
			http.StatusBadRequest, http.StatusNotFound, http.StatusMethodNotAllowed, http.StatusRequestEntityTooLarge:
		default:
			t.Fatalf("%s %s: status %d", method, target, rec.Code)
		}
		if rec.Code >= 400 {
			if after := string(fl.nodes[0].sampler.SampleOnce(time.Unix(1, 0)).Exposition()); after != before {
				t.Fatalf("%s %s was rejected (%d) but changed node 0", method, target, rec.Code)
			}
		}
	})
}
