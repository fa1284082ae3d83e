"""kube-proxy: Service networking for one node.

    types          ServicePortName / ServicePort / Endpoint, parsed from API objects
    changetracker  {previous, current} per Service and per Service's EndpointSlices
    topology       endpoint selection (ready, terminating, traffic policies)
    proxier        informer handlers -> trackers -> debounced sync (SyncRunner)
    nftables       backend: one `ip` table, one `nft -f` per sync
    iptables       backend: KUBE-* chains, one `iptables-restore --noflush` per table
    conntrack      stale UDP flow cleanup
    healthcheck    :10256 healthz and healthCheckNodePort servers
    metrics        upstream metric names
    config / app / main   KubeProxyConfiguration, ProxyServer, `kubenode proxy`
"""
