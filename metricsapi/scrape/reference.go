package scrape

import (
	"bytes"
	"fmt"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/gpu-metrics-server/gpu-metrics-server/exposition"
)

// parseReference parses body with expfmt's text parser (the reference
// implementation of the format) and feeds the families the parser reads to
// acc. It handles every syntax expfmt does, at several times the cost of the
// fast scanner.
func parseReference(body []byte, acc *accumulator) error {
	tp := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := tp.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		return err
	}
	var l lineLabels
	for r := exposition.RoleNone + 1; r < exposition.NumRoles; r++ {
		name := r.Family().Name
		mf := mfs[name]
		if mf == nil {
			continue
		}
		typ := mf.GetType()
		if typ != dto.MetricType_GAUGE && typ != dto.MetricType_COUNTER && typ != dto.MetricType_UNTYPED {
			return fmt.Errorf("%s has type %q, want gauge", name, typ)
		}
		for _, m := range mf.GetMetric() {
			l = lineLabels{}
			for _, lp := range m.GetLabel() {
				if k, ok := labelOf([]byte(lp.GetName())); ok {
					l[k] = acc.intern([]byte(lp.GetValue()))
				}
			}
			var v float64
			switch typ {
			case dto.MetricType_GAUGE:
				v = m.GetGauge().GetValue()
			case dto.MetricType_COUNTER:
				v = m.GetCounter().GetValue()
			default:
				v = m.GetUntyped().GetValue()
			}
			acc.add(r, &l, v, nil)
		}
	}
	return nil
}
