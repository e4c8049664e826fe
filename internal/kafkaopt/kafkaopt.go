// Package kafkaopt turns a topology cluster (bootstrap, TLS, SASL) into
// franz-go client options. franz-go is the Kafka client of the project: pure
// Go, complete protocol coverage (transactions, KIP-848), and the kfake
// in-process cluster used by the demo and tests.
package kafkaopt

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/meridian-gw/meridian/topology"
)

// Opts returns the client options that reach cluster c. log may be nil.
func Opts(c *topology.Cluster, log *slog.Logger) ([]kgo.Opt, error) {
	if c.Kind == "amqp" {
		return nil, fmt.Errorf("cluster %s is an AMQP broker, not a Kafka cluster", c.Ref())
	}
	opts := []kgo.Opt{kgo.SeedBrokers(c.Bootstrap...), kgo.ClientID("meridian")}
	if log != nil {
		opts = append(opts, kgo.WithLogger(Logger(log.With("cluster", c.Ref()))))
	}
	if c.TLS != nil && (c.TLS.Enabled == nil || *c.TLS.Enabled) {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.TLS.ServerName, InsecureSkipVerify: c.TLS.InsecureSkipVerify} //nolint:gosec // user's explicit choice
		if c.TLS.CAFile != "" {
			pem, err := os.ReadFile(c.TLS.CAFile)
			if err != nil {
				return nil, fmt.Errorf("cluster %s: tls ca_file: %w", c.Ref(), err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("cluster %s: tls ca_file %s: no PEM certificates", c.Ref(), c.TLS.CAFile)
			}
			cfg.RootCAs = pool
		}
		if c.TLS.CertFile != "" {
			cert, err := tls.LoadX509KeyPair(c.TLS.CertFile, c.TLS.KeyFile)
			if err != nil {
				return nil, fmt.Errorf("cluster %s: tls client certificate: %w", c.Ref(), err)
			}
			cfg.Certificates = []tls.Certificate{cert}
		}
		opts = append(opts, kgo.DialTLSConfig(cfg))
	}
	if s := c.SASL; s != nil {
		switch s.Mechanism {
		case "plain":
			opts = append(opts, kgo.SASL(plain.Auth{User: s.Username, Pass: s.Password.Reveal()}.AsMechanism()))
		case "scram-sha-256":
			opts = append(opts, kgo.SASL(scram.Auth{User: s.Username, Pass: s.Password.Reveal()}.AsSha256Mechanism()))
		case "scram-sha-512":
			opts = append(opts, kgo.SASL(scram.Auth{User: s.Username, Pass: s.Password.Reveal()}.AsSha512Mechanism()))
		default:
			return nil, fmt.Errorf("cluster %s: unknown sasl mechanism %q", c.Ref(), s.Mechanism)
		}
	}
	return opts, nil
}

// Logger adapts slog to franz-go's logger one level down: franz-go logs every
// transaction and metadata refresh at info, which is debug for a gateway;
// its warnings and errors stay warnings and errors.
func Logger(l *slog.Logger) kgo.Logger { return kgoLogger{l} }

type kgoLogger struct{ l *slog.Logger }

func (k kgoLogger) Level() kgo.LogLevel {
	ctx := context.Background()
	switch {
	case k.l.Enabled(ctx, slog.LevelDebug):
		return kgo.LogLevelDebug // kgo debug and info both show at slog debug
	case k.l.Enabled(ctx, slog.LevelWarn):
		return kgo.LogLevelWarn
	default:
		return kgo.LogLevelError
	}
}

func (k kgoLogger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	lvl := slog.LevelDebug
	switch level {
	case kgo.LogLevelError:
		lvl = slog.LevelError
	case kgo.LogLevelWarn:
		lvl = slog.LevelWarn
	}
	k.l.Log(context.Background(), lvl, msg, keyvals...)
}
