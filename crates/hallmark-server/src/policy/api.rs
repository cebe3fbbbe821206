//! The JSON documents of the policy admin API: requests and answers, the
//! same ones `hallmark policy … --json` and `hallmark group … --json` print.
