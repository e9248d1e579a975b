// Command argocd-lite: the two Argo CD programs the GitOps e2e runs out of
// cluster (application controller, repo server) plus the git askpass helper
// the repo server may exec. Linking only these is cheaper than upstream's
// multi-call binary, which also links the API server, Dex and the CLI.
// Dispatch on ARGOCD_BINARY_NAME, else on argv[0], as upstream does.
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	appcontroller "github.com/argoproj/argo-cd/v3/cmd/argocd-application-controller/commands"
	gitaskpass "github.com/argoproj/argo-cd/v3/cmd/argocd-git-ask-pass/commands"
	reposerver "github.com/argoproj/argo-cd/v3/cmd/argocd-repo-server/commands"
	"github.com/argoproj/argo-cd/v3/common"
)

func main() {
	name := filepath.Base(os.Args[0])
	if v := os.Getenv("ARGOCD_BINARY_NAME"); v != "" {
		name = v
	}
	var cmd *cobra.Command
	switch name {
	case common.CommandApplicationController:
		cmd = appcontroller.NewCommand()
	case common.CommandRepoServer:
		cmd = reposerver.NewCommand()
	case common.CommandGitAskPass:
		cmd = gitaskpass.NewCommand()
	default:
		fmt.Fprintf(os.Stderr, "argocd-lite: unknown program %q (set ARGOCD_BINARY_NAME to %s or %s)\n",
			name, common.CommandApplicationController, common.CommandRepoServer)
		os.Exit(2)
	}
	if err := cmd.Execute(); err != nil {
		os.Exit(1)
	}
}
