"""Static checks of the deployment files in infra/."""
