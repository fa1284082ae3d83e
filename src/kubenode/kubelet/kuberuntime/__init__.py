"""Pod -> CRI (upstream pkg/kubelet/kuberuntime): sandbox and container configs, the
runtime manager that runs SyncPod/KillPod, and computePodActions."""
