package lab

import (
	"context"
	"errors"
	"fmt"

	"github.com/meridian-gw/meridian/internal/kafkatest"
)

// RunMirrorBenchReal is RunMirrorBench on two real Apache Kafka clusters
// (internal/kafkatest, full JIT) started for the benchmark and stopped
// after it: both contenders of every run get fresh topics on the same two
// brokers.
func RunMirrorBenchReal(ctx context.Context, o BenchOptions) (res *BenchResult, err error) {
	if o.ProduceLatency > 0 {
		return nil, errors.New("produce latency needs kfake at the destination, not real Kafka")
	}
	logf := func(string, ...any) {}
	if o.Logger != nil {
		logf = func(format string, args ...any) {
			o.Logger.Info(fmt.Sprintf(format, args...), "component", "kafkatest")
		}
	}
	cs, stop, err := kafkatest.Launch(2, kafkatest.Options{JVMArgs: FullJIT}, logf)
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, stop()) }()
	o.EdgeBootstrap, o.HQBootstrap = cs[0].Bootstrap(), cs[1].Bootstrap()
	res, err = RunMirrorBench(ctx, o)
	if res != nil {
		res.Kafka = "Apache Kafka " + kafkatest.Version
	}
	return res, err
}

// RunDemoReal is RunDemo on two real Apache Kafka clusters (internal/kafkatest,
// the harness's quick-start JVM settings) started for the demo and stopped
// after it.
func RunDemoReal(ctx context.Context, o DemoOptions) (sum *DemoSummary, err error) {
	logf := func(string, ...any) {}
	if o.Logger != nil {
		logf = func(format string, args ...any) {
			o.Logger.Info(fmt.Sprintf(format, args...), "component", "kafkatest")
		}
	}
	if o.Out != nil {
		fmt.Fprintf(o.Out, "starting two Apache Kafka %s brokers on 127.0.0.1 ...\n", kafkatest.Version)
	}
	cs, stop, err := kafkatest.Launch(2, kafkatest.Options{}, logf)
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, stop()) }()
	o.EdgeBootstrap, o.HQBootstrap = cs[0].Bootstrap(), cs[1].Bootstrap()
	return RunDemo(ctx, o)
}
