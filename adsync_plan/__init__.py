"""adsync-plan: Terraform-style synchronisation of STARFACE PBX users with Active Directory and Entra ID."""

__version__ = "0.1.0"
