"""S13 ME-Identity-Check over Diameter (3GPP TS 29.272 §5.2.5) for the 4G core: a request
read and answered, pure (`check`), and the Diameter node that carries it (`node`)."""
