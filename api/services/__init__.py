"""The API's services: what each mutating route does, behind thin routes."""
