"""Registry events: the receiver of the distribution registry's notifications (stored in S3, one
object per envelope), scan on push (an Airflow asset event per push, from the receiver or from
ECR through EventBridge and SQS), and the pull events the reports count."""
