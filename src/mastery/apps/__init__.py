"""The capstone applications, built on the domain packages: the Research Assistant and Cyber-Sentinel."""
