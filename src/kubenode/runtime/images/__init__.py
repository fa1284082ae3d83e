"""Images of `kubenode runtime`: references, registry client, content store, unpack,
CRI ImageService, and the `kubenode image` command."""
