//! vfgenie-controller: the cluster side of vfgenie (admission webhook, LogicalNetwork status).
