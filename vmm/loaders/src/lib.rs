//! Image loaders (Linux boot protocol, firmware) that produce a load plan
