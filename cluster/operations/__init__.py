"""Running and inspecting a deployment from outside it: the local cluster (`local`), Kubernetes (`k8s`,
`render`), where replicas run (`topology`), faults on purpose (`fault_injection`), and the clients behind
`cascade report`, `cascade calibrate` and `cascade adapt`. The top layer below the CLI."""
