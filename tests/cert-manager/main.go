// cert-manager-controller: cert-manager's own controllers (v1.21, from the
// Go module proxy) in a small main of ours, for the integration tests that
// need Certificates issued for real (t_internal_tls).
//
// cert-manager's cmd/controller is a module of its own that the proxy does
// not serve, so this main builds the controllers the way it does: a
// ContextFactory from the kubeconfig, each controller from the registry its
// package fills at init, then the shared informers. Only the issuers the
// tests use are linked (SelfSigned and CA), which leaves out the ACME DNS
// providers' and the cloud issuers' SDKs. No leader election, no webhook:
// one replica against the test control plane.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	controllerpkg "github.com/cert-manager/cert-manager/pkg/controller"
	"github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/approver"
	crca "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/ca"
	crselfsigned "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/selfsigned"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/issuing"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/keymanager"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/readiness"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/requestmanager"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/revisionmanager"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/trigger"
	"github.com/cert-manager/cert-manager/pkg/controller/clusterissuers"
	"github.com/cert-manager/cert-manager/pkg/controller/issuers"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/ca"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/selfsigned"
)

func main() {
	kubeconfig := flag.String("kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig of the API server")
	resourceNS := flag.String("cluster-resource-namespace", "cert-manager", "namespace of ClusterIssuers' Secrets")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	opts := controllerpkg.ContextOptions{
		Kubeconfig:         *kubeconfig,
		KubernetesAPIQPS:   50,
		KubernetesAPIBurst: 100,
		IssuerOptions:      controllerpkg.IssuerOptions{ClusterResourceNamespace: *resourceNS},
		CertificateOptions: controllerpkg.CertificateOptions{
			// cert-manager's defaults (its controller config's defaults.go)
			CertificateRequestMinimumBackoffDuration: time.Hour,
			CertificateRequestMaximumBackoffDuration: 32 * time.Hour,
		},
	}
	factory, err := controllerpkg.NewContextFactory(ctx, opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "cert-manager-controller:", err)
		os.Exit(1)
	}
	names := []string{
		issuers.ControllerName, clusterissuers.ControllerName,
		trigger.ControllerName, issuing.ControllerName, keymanager.ControllerName,
		requestmanager.ControllerName, readiness.ControllerName, revisionmanager.ControllerName,
		approver.ControllerName, crca.CRControllerName, crselfsigned.CRControllerName,
	}
	var wg sync.WaitGroup
	for _, name := range names {
		ctor, ok := controllerpkg.Known()[name]
		if !ok {
			fmt.Fprintln(os.Stderr, "cert-manager-controller: no controller registered as", name)
			os.Exit(1)
		}
		c, err := ctor(factory)
		if err != nil {
			fmt.Fprintf(os.Stderr, "cert-manager-controller: %s: %v\n", name, err)
			os.Exit(1)
		}
		wg.Add(1)
		go func(name string, c controllerpkg.Interface) {
			defer wg.Done()
			if err := c.Run(2, ctx); err != nil {
				fmt.Fprintf(os.Stderr, "cert-manager-controller: %s stopped: %v\n", name, err)
				stop()
			}
		}(name, c)
	}
	// the informers the controllers asked for start only now, as in cert-manager's own main
	shared, err := factory.Build()
	if err != nil {
		fmt.Fprintln(os.Stderr, "cert-manager-controller:", err)
		os.Exit(1)
	}
	shared.KubeSharedInformerFactory.Start(ctx.Done())
	shared.SharedInformerFactory.Start(ctx.Done())
	fmt.Fprintf(os.Stderr, "cert-manager-controller: running %d controllers\n", len(names))
	<-ctx.Done()
	wg.Wait()
}
