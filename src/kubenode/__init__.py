"""kubenode: a Kubernetes worker node in Python (kubelet, kube-proxy, a CRI runtime) with a
small embedded control plane."""

__version__ = "0.1.0"
