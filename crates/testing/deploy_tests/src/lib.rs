//! Tests only (`tests/deploy.rs`): the deployment files (docker/, deploy/, helm/, skaffold.yaml)
//! run on the Docker engine or are checked against the repository and Kubernetes' schemas.
