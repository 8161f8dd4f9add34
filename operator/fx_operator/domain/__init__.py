"""The pure core: scopes and precedence, envelope crypto, masking, input validation. No I/O."""
