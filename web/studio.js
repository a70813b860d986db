// Placeholder: the studio page's script (replaced by the page's own).
"use strict";
