// metrics-lint reads a Prometheus text exposition on stdin and checks it the
// way `promtool check metrics` does: it must parse (expfmt's text parser) and
// pass promlint (client_golang's testutil/promlint, the library promtool
// uses). Exit 1 with every problem listed; exit 0 prints the family count.
package main

import (
	"bytes"
	"fmt"
	"io"
	"os"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"github.com/prometheus/common/expfmt"
)

func main() {
	in, err := io.ReadAll(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "read:", err)
		os.Exit(2)
	}
	var parser expfmt.TextParser
	families, err := parser.TextToMetricFamilies(bytes.NewReader(in))
	if err != nil {
		fmt.Fprintln(os.Stderr, "parse:", err)
		os.Exit(1)
	}
	problems, err := promlint.New(bytes.NewReader(in)).Lint()
	if err != nil {
		fmt.Fprintln(os.Stderr, "lint:", err)
		os.Exit(1)
	}
	for _, p := range problems {
		fmt.Fprintf(os.Stderr, "%s: %s\n", p.Metric, p.Text)
	}
	if len(problems) > 0 {
		os.Exit(1)
	}
	fmt.Printf("%d metric families, no problems\n", len(families))
}
