package pki

import (
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
)

// Problem is one thing wrong with a gateway's TLS files: Field names the
// setting ("ca_file", "cert_file" or "key_file") and Err says what.
type Problem struct {
	Field string
	Err   error
}

func (p Problem) Error() string { return p.Field + ": " + p.Err.Error() }

func (p Problem) Unwrap() error { return p.Err }

// CheckGatewayFiles checks, without opening a socket, the link TLS files of
// gateway name as ServerTLS and ClientTLS will use them, and returns every
// problem: a file that is missing or not PEM of the right kind, a key that
// does not match the certificate, a certificate not signed by a CA in
// caFile, and a certificate that does not name the gateway (Common Name
// and DNS SAN, as `meridian certs` issues them). Nil means usable.
func CheckGatewayFiles(caFile, certFile, keyFile, name string) []Problem {
	var out []Problem
	pool, caErr := LoadPool(caFile)
	if caErr != nil {
		out = append(out, Problem{"ca_file", caErr})
	}
	var leaf *x509.Certificate
	ders, err := readCertFile(certFile)
	if err == nil {
		leaf, err = x509.ParseCertificate(ders[0])
		if err != nil {
			err = fmt.Errorf("%s: %w", certFile, err)
		}
	}
	if err != nil {
		out = append(out, Problem{"cert_file", err})
	}
	key, err := readKeyFile(keyFile)
	if err != nil {
		out = append(out, Problem{"key_file", err})
	}
	if leaf == nil {
		return out
	}
	if key != nil && !key.PublicKey.Equal(leaf.PublicKey) {
		out = append(out, Problem{"key_file", fmt.Errorf("%s: key does not match certificate %s", keyFile, certFile)})
	}
	if pool != nil {
		inter := x509.NewCertPool()
		for _, d := range ders[1:] {
			if c, err := x509.ParseCertificate(d); err == nil {
				inter.AddCert(c)
			}
		}
		_, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}})
		if err != nil {
			out = append(out, Problem{"cert_file", fmt.Errorf("%s is not valid under the CA in %s: %w", certFile, caFile, err)})
		}
	}
	if leaf.Subject.CommonName != name || !slices.Contains(leaf.DNSNames, name) {
		out = append(out, Problem{"cert_file", fmt.Errorf("%s names %q, not gateway %q; peers check a gateway's certificate by its name (make one with `meridian certs`)",
			certFile, leaf.Subject.CommonName, name)})
	}
	return out
}

// ErrProblems joins problems into one error (nil for none).
func ErrProblems(ps []Problem) error {
	errs := make([]error, len(ps))
	for i, p := range ps {
		errs[i] = p
	}
	return errors.Join(errs...)
}
