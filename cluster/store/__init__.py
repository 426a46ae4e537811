"""What the cluster keeps on disk: the embedded models' cache (`models`) and recorded traffic (`recording`)."""
